"""The FreeAL loop for NER: the stages of loop.py, with sentences in place of texts.

What changes from classification:
- rows carry `tokens`; labels are BIO `tags` (the LLM's entity list aligned to the tokens);
- round 0's demos are sentences the LLM writes already annotated;
- the SLM is the token tagger; a sentence's loss is its mean token loss, and the GMM splits on it;
- demo candidates are clean sentences whose tags the tagger reproduces exactly, grouped by the
  entity type they name most ("none" for none), so every type keeps demos of its own;
- an LLM answer that could not be read leaves its sentence to the tagger in the final labels;
- quality is entity-level exact-match precision, recall and F1 against `gold_tags`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import ray

from freeal_ray import corpus as cio
from freeal_ray import metrics as M
from freeal_ray.annotation import LLMSettings, synthesize_entity_demos
from freeal_ray.errors import CorpusError
from freeal_ray.loop import FreeALRun, _want_gpu
from freeal_ray.ner import dominant_type, is_valid_bio
from freeal_ray.tagger import TaggerScorer, tag_indices
from freeal_ray.training import TrainSettings, train_slm

TAGGER_COLUMNS = ["pred_tags", "loss", "embedding", "p_clean", "clean"]


# A per-token head from random weights learns little in the ~100 steps a few hundred sentences give
# at the encoder's rate (see slm.head_lr in the README).
TAGGER_HEAD_LR_SCALE = 20


class EntityRun(FreeALRun):
    scorer = TaggerScorer
    demo_columns = ("id", "text", "tokens", "tags", "label")
    round0_can_be_confident = False

    def __init__(self, config):
        super().__init__(config)
        self.entities = True

    def _llm(self) -> LLMSettings:
        settings = super()._llm()
        if settings.runner != "actors":  # NER answers are read by the engine actors' extract
            settings = LLMSettings(**{**settings.__dict__, "runner": "actors"})
        return settings

    def _check_gold(self) -> None:
        if not self.cfg.corpus.gold_column:
            return
        known = set(self.task.tags)
        bad = self._table("corpus").filter(
            lambda r: r["gold_tags"] is not None and not (set(r["gold_tags"]) <= known and is_valid_bio(list(r["gold_tags"])))
        ).take(1)
        if bad:
            raise CorpusError(
                f"gold column {self.cfg.corpus.gold_column!r} of row {bad[0]['id']!r} holds tags outside the task's "
                f"BIO tag set or an I- tag with no entity to continue: {list(bad[0]['gold_tags'])}; tags: {', '.join(self.task.tags)}"
            )

    def _synthesize(self, n_rows: int, llm: LLMSettings, info: dict) -> pd.DataFrame:
        demos, counts = synthesize_entity_demos(
            self._table("corpus"), n_rows, self.task, llm, self.cfg.loop.prototypes,
            self.cfg.loop.synth_per_class, max(192, 3 * self.cfg.llm.synth_max_tokens), self.cfg.loop.seed,
        )
        info.update(synthesis=counts)
        if demos.empty:
            raise RuntimeError(
                f"demo synthesis produced no usable sentence: of {counts['written']} answers, {counts['unparsed']} "
                f"were not the JSON asked for and {counts['no_entity_placed']} named no entity found in their sentence"
            )
        return demos

    def _label_metrics(self, ds: ray.data.Dataset, column: str, prefix: str) -> dict:
        if not self.cfg.corpus.gold_column:
            return {}
        q = M.entity_quality(ds, "tags")
        return {f"{prefix}_f1": q["f1"], f"{prefix}_precision": q["precision"], f"{prefix}_recall": q["recall"]}

    def _train_settings(self, r: int, labels) -> TrainSettings:
        settings = super()._train_settings(r, labels)
        return dataclasses.replace(settings, head_lr=settings.head_lr or TAGGER_HEAD_LR_SCALE * settings.lr)

    def train(self, r: int) -> None:
        with self._stage(f"train-{r}") as info:
            if info is None:
                return
            tags = self.task.tags
            rows = self._table(f"round-{r - 1}", "labels").map_batches(
                _training_sentences, fn_kwargs={"tags": tags}, batch_format="pandas"
            )
            s = self.cfg.slm
            result = train_slm(rows, self._train_settings(r, tags), str(self._path(f"round-{r}", "slm")),
                               s.num_workers, _want_gpu(s.use_gpu), tagger=True, desc=f"SLM training, round {r}")
            info.update({k: result[k] for k in ("train_loss", "clean_fraction") if k in result})

    def _score_metrics(self, scores: ray.data.Dataset, clean: ray.data.Dataset, n_clean: int) -> dict:
        out = {"slm_f1": M.entity_quality(scores, "pred_tags")["f1"]}
        if n_clean:
            out["clean_precision"] = M.entity_quality(clean, "tags")["precision"]
        return out

    def _demo_groups(self) -> tuple[str, ...]:
        return (*self.task.entity_types, "none")

    def _demo_candidates(self, scores: ray.data.Dataset) -> ray.data.Dataset:
        # the group key is added before filtering, so an empty result still has the column
        return cio.where(
            scores.map_batches(_with_dominant_type, batch_format="pandas"),
            lambda row: bool(row["clean"]) and row["tags"] is not None and list(row["pred_tags"]) == list(row["tags"]),
            ["clean", "tags", "pred_tags"],
        ).select_columns(["id", "text", "tokens", "tags", "label", "loss", "embedding"])

    accept = staticmethod(lambda batch, rule: batch)  # an entity answer has no confidence to compare
    carry = staticmethod(lambda batch: carry_sentence_to_refinery(batch))
    fill = staticmethod(lambda batch: _fill_unread_answers(batch))
    changed = staticmethod(lambda row: _tag_list(row["tags"]) != _tag_list(row["prev_tags"]))
    agrees = staticmethod(lambda row: row["tags"] is not None and list(row["pred_tags"]) == list(row["tags"]))
    labelled = staticmethod(lambda row: row["tags"] is not None)

    def _final_metrics(self, final: ray.data.Dataset) -> dict:
        q = M.entity_quality(final, "tags")
        return {"final_f1": q["f1"], "final_precision": q["precision"], "final_recall": q["recall"]}


def _training_sentences(batch: pd.DataFrame, tags: tuple[str, ...]) -> pd.DataFrame:
    """Labelled sentences as the tagger trains on them: tokens and a tag index per token. A
    sentence whose answer could not be read has no tags (None) and so nothing to learn (all -1)."""
    tokens = [list(t) for t in batch["tokens"]]
    return pd.DataFrame({"tokens": tokens, "tag_idx": tag_indices(list(batch["tags"]), tags, [len(t) for t in tokens])})


def _with_dominant_type(batch: pd.DataFrame) -> pd.DataFrame:
    batch["label"] = [dominant_type(list(t)) if t is not None else "none" for t in batch["tags"]]
    return batch


def carry_sentence_to_refinery(batch: pd.DataFrame) -> pd.DataFrame:
    """A scored sentence as the refinery keeps or re-asks it: the tagger's tags as `slm_tags`, the
    tags it had as `prev_tags`, without the tagger's scratch columns."""
    batch = batch.drop(columns=[c for c in ("slm_tags", "prev_tags") if c in batch])
    batch = batch.rename(columns={"pred_tags": "slm_tags"})
    batch["prev_tags"] = batch["tags"]
    return batch.drop(columns=[c for c in TAGGER_COLUMNS if c in batch])


def _fill_unread_answers(batch: pd.DataFrame) -> pd.DataFrame:
    """Where the LLM's answer could not be read (no tags), the tagger's tags become the labels (source 'slm')."""
    if "slm_tags" not in batch:
        return batch
    unread = np.array([t is None and s is not None for t, s in zip(batch["tags"], batch["slm_tags"])], dtype=bool)
    if unread.any():
        batch = batch.copy()
        batch["tags"] = [s if u else t for t, s, u in zip(batch["tags"], batch["slm_tags"], unread)]
        batch["source"] = np.where(unread, "slm", batch["source"])
    return batch


def _tag_list(tags) -> list | None:
    return None if tags is None else list(tags)
