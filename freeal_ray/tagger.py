"""The small model for NER: the encoder with a per-token head, BIO tags per word.

Words are split into subwords by the encoder's tokenizer; a word's tag is read and trained at its
first subword and the rest are ignored, so word-level tags round-trip whatever the tokenizer.
A sentence's loss, for the GMM's clean/noisy split, is the mean cross-entropy over its words: the
mean, not the sum, so a long sentence is not judged noisy for being long.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from freeal_ray.embedding import mean_pool
from freeal_ray.ner import tag_indices
from freeal_ray.task import label_maps

IGNORE = -100


class TokenTagger(nn.Module):
    """The encoder with Hugging Face's token-classification head (AutoModelForTokenClassification:
    dropout and a linear layer per token), so a transformers pipeline loads the saved folder."""

    def __init__(self, encoder_path: str, tags):
        super().__init__()
        from transformers import AutoModelForTokenClassification

        self.model = AutoModelForTokenClassification.from_pretrained(encoder_path, **label_maps(tags))

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.logits, mean_pool(out.hidden_states[-1], attention_mask)


def encode_words(tokenizer, sentences: Sequence[Sequence[str]], max_length: int):
    """(input_ids, attention_mask, word_ids per sentence) for pre-split sentences."""
    enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, truncation=True,
                    max_length=max_length, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], [enc.word_ids(i) for i in range(len(sentences))]


def subword_targets(word_ids: Sequence[int | None], word_tags: Sequence[int]) -> list[int]:
    """Per subword, its word's tag index at the word's first subword, IGNORE elsewhere (special
    tokens, continuation subwords, words with no tag)."""
    out, previous = [], None
    for w in word_ids:
        first = w is not None and w != previous
        out.append(int(word_tags[w]) if first and w < len(word_tags) and word_tags[w] >= 0 else IGNORE)
        previous = w
    return out


def sentence_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each sentence's mean token cross-entropy over its tagged words (NaN where it has none)."""
    per_token = nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    counted = targets != IGNORE
    n = counted.sum(1)
    mean = (per_token * counted).sum(1) / n.clamp(min=1)
    return torch.where(n > 0, mean, torch.full_like(mean, float("nan")))


def repair_bio(tags: Sequence[str]) -> list[str]:
    """Make a predicted sequence valid BIO: an I-X that follows neither B-X nor I-X becomes B-X."""
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def word_tags(token_logits: np.ndarray, word_ids: Sequence[int | None], n_words: int, tags: Sequence[str]) -> list[str]:
    """Word-level BIO tags from one sentence's subword logits; words cut off by max_length are O."""
    out = ["O"] * n_words
    previous = None
    for position, w in enumerate(word_ids):
        if w is not None and w != previous and w < n_words:
            out[w] = tags[int(token_logits[position].argmax())]
        previous = w
    return repair_bio(out)


def score_sentences(checkpoint, batch: pd.DataFrame) -> pd.DataFrame:
    """Per sentence: the tagger's BIO tags (`pred_tags`), its loss against the current `tags` (NaN
    when the row has none) and its sentence embedding (for demo selection)."""
    model, tags = checkpoint.model, checkpoint.classes
    sentences = [list(t) for t in batch["tokens"]]
    ids, mask, word_ids = encode_words(checkpoint.tokenizer, sentences, checkpoint.max_length)
    given = tag_indices(batch["tags"] if "tags" in batch else None, tags, [len(s) for s in sentences])
    targets = torch.tensor([subword_targets(w, g) for w, g in zip(word_ids, given)])
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits, pooled = model(ids.to(device), mask.to(device))
        logits, pooled = logits.cpu(), pooled.cpu()
        loss = sentence_losses(logits.float(), targets).numpy()
    logits = logits.float().numpy()
    batch = batch.copy()
    batch["pred_tags"] = [word_tags(logits[i], word_ids[i], len(s), tags) for i, s in enumerate(sentences)]
    batch["loss"] = loss.astype(np.float64)
    batch["embedding"] = list(torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32))
    return batch
