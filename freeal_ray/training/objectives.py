"""What differs between the two heads the one training loop (worker.py) fits: how a batch
becomes tensors, the loss of a warm-up step and of a robust step, and how the model is saved.

Sentences (classification): clean rows get soft cross-entropy plus mixup on their embeddings;
noisy rows keep a refined target, p * given + (1 - p) * the SLM's sharpened prediction with
p = max(p_clean, label_floor) (DivideMix's label refinement, floored: a hard row whose label is
right still teaches), or, with `noisy_rows="drop"`, lose their label; noisy and unlabelled rows
get a consistency loss (KL between the predictions on two views of the text).
Tokens (NER): a sentence's loss is its mean token loss; clean sentences keep their tags, noisy
ones lose them but keep a consistency loss between two dropout passes. Mixup does not apply.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from freeal_ray.training.settings import TrainSettings


@dataclass
class Step:
    """One batch's loss to descend, its labelled rows' measured losses (for the next GMM), and counts."""

    loss: object
    row_losses: np.ndarray
    taught: int
    labelled: int
    rows: int


class _Objective:
    """What both heads hold: the settings, the device, the encoder's tokenizer and a per-rank RNG."""

    def __init__(self, s: TrainSettings, device, rank: int):
        import torch.nn.functional as F
        from transformers import AutoTokenizer

        self.s, self.device, self.F = s, device, F
        self.tokenizer = AutoTokenizer.from_pretrained(s.encoder_path)
        self.rng = random.Random(s.seed + rank)


class SentenceObjective(_Objective):
    eval_pass_after_warmup = True  # see worker._eval_losses

    def build_model(self):
        from freeal_ray.slm import SLMClassifier

        return SLMClassifier(self.s.encoder_path, self.s.labels)

    def save(self, model, folder: str) -> None:
        from freeal_ray.checkpoint import save_checkpoint

        save_checkpoint(model, self.tokenizer, self.s.labels, self.s.max_length, folder, head="classifier")

    def encode(self, texts):
        from freeal_ray.slm import tokenize

        ids, mask = tokenize(self.tokenizer, texts, self.s.max_length)
        return ids.to(self.device), mask.to(self.device)

    def labelled_losses(self, model, batch) -> np.ndarray:
        import torch

        target = torch.as_tensor(batch["label_idx"].astype(np.int64), device=self.device)
        logits, _, _ = model(*self.encode([str(t) for t in batch["text"]]))
        keep = target >= 0
        return self.F.cross_entropy(logits[keep], target[keep], reduction="none").cpu().numpy()

    def step(self, model, batch, gmm, robust: bool, w: float) -> Step:
        import torch

        F, s = self.F, self.s
        texts = [str(t) for t in batch["text"]]
        target = torch.as_tensor(batch["label_idx"].astype(np.int64), device=self.device)
        labelled = target >= 0
        ids, mask = self.encode(texts)
        if not robust:
            logits, _, _ = model(ids, mask)
            per_row = F.cross_entropy(logits[labelled], target[labelled], reduction="none")
            loss = per_row.mean() if labelled.any() else logits.sum() * 0.0
            return Step(loss, per_row.detach().cpu().numpy(), int(labelled.sum()), int(labelled.sum()), len(texts))
        with torch.no_grad():  # the loss that decides clean/noisy is measured, not trained on
            model.eval()
            eval_logits, _, _ = model(ids, mask)
            model.train()
            per_row = F.cross_entropy(eval_logits[labelled], target[labelled], reduction="none").cpu().numpy()
        p_clean = torch.zeros(len(texts), device=self.device)
        p_clean[labelled] = torch.as_tensor(gmm.p_clean(per_row), dtype=torch.float32, device=self.device)
        clean = labelled & (p_clean > s.gmm_threshold)
        soft = refined_targets(target, p_clean, eval_logits, s.sharpen_temperature, s.label_floor)
        taught = labelled if s.noisy_rows == "refine" else clean
        loss = self._robust_loss(model, texts, batch, ids, mask, soft, taught, clean, w)
        return Step(loss, per_row, int(clean.sum()), int(labelled.sum()), len(texts))

    def _robust_loss(self, model, texts, batch, ids, mask, soft, taught, clean, w):
        """Soft cross-entropy + mixup on the taught rows, consistency on the noisy and unlabelled
        ones, in one forward call."""
        import torch

        F, s = self.F, self.s
        noisy = ~clean
        views = batch["view"] if "view" in batch else [None] * len(texts)
        second = [str(v) if isinstance(v, str) and v else word_dropout(t, s.word_dropout, self.rng)
                  for t, v, n in zip(texts, views, noisy.tolist()) if n]
        n = len(texts)
        if second:
            ids2, mask2 = self.encode(second)
            width = max(ids.shape[1], ids2.shape[1])
            ids = torch.cat([F.pad(ids, (0, width - ids.shape[1])), F.pad(ids2, (0, width - ids2.shape[1]))])
            mask = torch.cat([F.pad(mask, (0, width - mask.shape[1])), F.pad(mask2, (0, width - mask2.shape[1]))])
        taught_idx = taught.nonzero().squeeze(1)
        perm = torch.randperm(len(taught_idx), device=ids.device)
        lam = float(np.random.default_rng(self.rng.randrange(1 << 30)).beta(s.mixup_alpha, s.mixup_alpha))
        lam = max(lam, 1.0 - lam)
        logits, _, mixed_logits = model(ids, mask, mix_index=taught_idx, mix_perm=perm, mix_lam=lam)
        loss = logits.sum() * 0.0
        if len(taught_idx):
            y = soft[taught_idx]
            loss = loss - (y * F.log_softmax(logits[:n][taught_idx], dim=-1)).sum(-1).mean()
            mixed_y = lam * y + (1 - lam) * y[perm]
            mix = -(mixed_y * F.log_softmax(mixed_logits, dim=-1)).sum(-1).mean()
            loss = loss + w * s.mixup_weight * mix
        if second:
            first = F.softmax(logits[:n][noisy].detach(), dim=-1)
            kl = F.kl_div(F.log_softmax(logits[n:], dim=-1), first, reduction="batchmean")
            loss = loss + w * s.consistency_weight * kl
        return loss


class TokenObjective(_Objective):
    # No eval pass: on the toy NER test it tipped the drop-mode split into setting ever more
    # sentences aside (clean share 0.68 -> 0.52 over three epochs); unmeasured on real NER data.
    eval_pass_after_warmup = False

    def build_model(self):
        from freeal_ray.tagger import TokenTagger

        return TokenTagger(self.s.encoder_path, self.s.labels)

    def save(self, model, folder: str) -> None:
        from freeal_ray.checkpoint import save_checkpoint

        save_checkpoint(model, self.tokenizer, self.s.labels, self.s.max_length, folder, head="tagger")

    def step(self, model, batch, gmm, robust: bool, w: float) -> Step:
        import torch

        from freeal_ray.tagger import encode_words, sentence_losses, subword_targets

        F, s = self.F, self.s
        sentences = [list(t) for t in batch["tokens"]]
        ids, mask, word_ids = encode_words(self.tokenizer, sentences, s.max_length)
        targets = torch.tensor([subword_targets(wi, list(g)) for wi, g in zip(word_ids, batch["tag_idx"])])
        ids, mask, targets = ids.to(self.device), mask.to(self.device), targets.to(self.device)
        if not robust:
            logits, _ = model(ids, mask)
            per_sentence = sentence_losses(logits, targets)
            labelled = ~torch.isnan(per_sentence)
            loss = per_sentence[labelled].mean() if labelled.any() else logits.sum() * 0.0
            n = int(labelled.sum())
            return Step(loss, per_sentence[labelled].detach().cpu().numpy(), n, n, len(sentences))
        with torch.no_grad():  # the loss that decides clean/noisy is measured, not trained on
            model.eval()
            measured = sentence_losses(model(ids, mask)[0], targets)
            model.train()
        labelled = ~torch.isnan(measured)
        p_clean = torch.zeros(len(sentences), device=self.device)
        p_clean[labelled] = torch.as_tensor(gmm.p_clean(measured[labelled].cpu().numpy()), dtype=torch.float32, device=self.device)
        taught = labelled & (p_clean > s.gmm_threshold)
        noisy = ~taught
        n = len(sentences)
        logits, _ = model(torch.cat([ids, ids[noisy]]), torch.cat([mask, mask[noisy]]))
        per_sentence = sentence_losses(logits[:n], targets)
        loss = per_sentence[taught].mean() if taught.any() else logits.sum() * 0.0
        if noisy.any():  # token distributions of two dropout passes, on real tokens only
            tokens = mask[noisy].bool()
            first = F.softmax(logits[:n][noisy].detach(), dim=-1)[tokens]
            loss = loss + w * s.consistency_weight * F.kl_div(F.log_softmax(logits[n:], dim=-1)[tokens], first, reduction="batchmean")
        return Step(loss, measured[labelled].cpu().numpy(), int(taught.sum()), int(labelled.sum()), n)


OBJECTIVES = {"sentences": SentenceObjective, "tokens": TokenObjective}


def refined_targets(target, p_clean, logits, temperature: float, label_floor: float = 0.0):
    """Per row, p * one-hot(given) + (1 - p) * the sharpened prediction, p = max(p_clean,
    label_floor); rows with no label (target -1) get all zeros, so no cross-entropy.
    The floor exists because a loss split also flags hard rows whose label is right: on MR's
    gpt-3.5 labels 86% of the rows it called noisy were, and the SLM's guess on them was worse
    than the label, so letting the guess replace the label taught the SLM its own mistakes."""
    import torch
    import torch.nn.functional as F

    labelled = target >= 0
    soft = torch.zeros(logits.shape, device=logits.device)
    given = F.one_hot(target[labelled], logits.shape[1]).float()
    guess = F.softmax(logits[labelled] / temperature, dim=-1)
    p = p_clean[labelled].clamp(min=label_floor).unsqueeze(1)
    soft[labelled] = p * given + (1 - p) * guess
    return soft


def word_dropout(text: str, p: float, rng: random.Random) -> str:
    """The cheap second view: drop each word with probability p (never all of them)."""
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept or words[:1])
