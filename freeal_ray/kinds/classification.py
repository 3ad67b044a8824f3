"""Text classification: a row is a text, its label one class of the task's label set."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from freeal_ray import tables
from freeal_ray import evokd
from freeal_ray import metrics as M
from freeal_ray.errors import CorpusError
from freeal_ray.kinds.base import TaskKind
from freeal_ray.task import label_indices
from freeal_ray.synthesis import given_demos, synthesize_demos
from freeal_ray.workers import PromptBuilder, ask_for_labels

log = logging.getLogger(__name__)
SLM_COLUMNS = ("pred", "probs", "loss", "embedding", "p_clean", "clean")


class Classification(TaskKind):
    name = "classification"
    label_column = "label"
    demo_columns = ("id", "text", "label")
    objective = "sentences"
    sentences = False
    answers_have_confidence = True
    scratch_columns = SLM_COLUMNS
    predicate_columns = ("label", "pred", "prev_label")
    candidate_columns = ("id", "label", "pred", "clean", "loss")

    def check_gold(self, corpus, column):
        labels = set(self.task.labels)
        unknown = tables.first_where(corpus, lambda r: r["gold"] is not None and r["gold"] not in labels, ["id", "gold"])
        if unknown:
            raise CorpusError(
                f"gold column {column!r} holds labels outside the task's label set, e.g. row {unknown['id']!r} "
                f"has {unknown['gold']!r}; labels: {', '.join(self.task.labels)}"
            )

    def long_texts(self, corpus, cap):
        return tables.count_where(corpus, lambda row: len(row["text"]) > cap, ["text"])

    def prompt_builder(self, settings):
        engine = settings.engine_config
        return PromptBuilder, {"style": settings.prompt_style, "llm_path": engine.model_path, "max_model_len": engine.max_model_len,
                               "messages": settings.engine == "openai" and engine.api_style == "chat"}

    def llm_worker(self, settings):
        return ask_for_labels, {"style": settings.prompt_style}

    def given_examples(self):
        return given_demos(self.task)

    def synthesize(self, corpus, n_rows, llm, loop, llm_config):
        demos, counts = synthesize_demos(corpus, n_rows, self.task, llm, loop.prototypes, loop.synth_per_class,
                                         llm_config.synth_temperature, llm_config.synth_max_tokens, loop.seed)
        missing = [label for label in self.task.labels if label not in set(demos["label"])]
        if missing:
            log.warning("the LLM wrote no usable demo for %s; those classes start with no demos", missing)
        if demos.empty:
            raise RuntimeError(
                f"demo synthesis produced no usable demo: of {counts['written']} written examples, {counts['empty']} were "
                f"empty, {counts['copied_a_corpus_row']} repeated a corpus row they were shown and "
                f"{counts['written_for_two_labels']} were written for two labels; add examples to the task file or try "
                "another llm.model"
            )
        return demos, counts

    def slm_classes(self):
        return tuple(self.task.labels)

    def training_rows(self, batch):
        out = pd.DataFrame({"text": batch["text"]})
        out["label_idx"] = label_indices(batch["label"] if "label" in batch else [None] * len(batch), self.task.labels)
        if "view" in batch:
            out["view"] = batch["view"]
        return out

    def labelled(self, row):
        return row["label"] is not None

    def agrees(self, row):
        return row["label"] is not None and row["pred"] == row["label"]

    def demo_groups(self):
        return self.task.labels

    def demo_candidates(self, batch):
        """Clean rows where the SLM agrees with the label."""
        return batch[batch["clean"].astype(bool) & batch["label"].notna() & (batch["pred"] == batch["label"])]

    def carry(self, batch):
        return carry_to_refinery(batch)

    def accept(self, batch, rule):
        return keep_surer_answer(batch, rule)

    def changed(self, row):
        return row["label"] != row["prev_label"]

    def student_labels(self, batch, round_):
        batch["label"] = batch["pred"]
        batch["confidence"] = [float(np.max(p)) for p in batch["probs"]]
        return self.by_the_slm(batch, round_)

    def fill(self, batch):
        return fill_abstentions(batch)

    def label_metrics(self, ds, prefix):
        q = M.label_quality(ds, "label", self.task.labels)
        return {f"{prefix}_acc": q["acc"], f"{prefix}_coverage": q["coverage"], f"{prefix}_macro_f1": q["macro_f1"]}

    def score_metrics(self, scores, clean, n_clean):
        return {"slm_acc": M.label_quality(scores, "pred", self.task.labels)["acc"],
                "clean_precision": M.label_quality(clean, "label", self.task.labels)["acc"] if n_clean else None,
                **M.split_quality(scores)}

    def final_metrics(self, final):
        return {"final_acc": M.label_quality(final, "label", self.task.labels)["acc"], **M.label_moves(final)}


    # ---- EvoKD (evokd.py) --------------------------------------------------------------------
    evolve_columns = ("text", "label")
    evolve_pool_columns = ("id", "text", "label", "pred", "confidence")
    evolve_rank = ("confidence", True)
    evolve_gold_columns = ("text", "gold")
    evolve_weak_lead = evokd.WEAK_LEAD

    def evolve_groups(self):
        return tuple(self.task.labels)

    def evolve_pool(self, pool):
        return pool[["id", "text", "label"]]

    def evolve_probe(self, model, rows):
        rows = rows.copy()
        predicted = model.predict(rows["text"].tolist()) if len(rows) else []
        rows["pred"] = [p["label"] for p in predicted]
        rows["pred_confidence"] = [p["confidence"] for p in predicted]
        rows["right"] = [(p == g) if isinstance(g, str) else None for p, g in zip(rows["pred"], rows["label"])]
        return rows

    def evolve_f1(self, labels, preds):
        return evokd.class_f1(list(labels), list(preds), self.task.labels)

    def evolve_analysis(self, probe, f1, shown, seed):
        wrong, right = evokd.shown_samples(probe["label"], probe["pred"], probe["pred_confidence"], shown, seed)
        w, g = probe.iloc[wrong], probe.iloc[right]
        messages = evokd.analysis_messages(self.task, list(zip(w["text"], w["label"], w["pred"])), list(zip(g["text"], g["label"])), f1)
        rows = pd.concat([w.assign(wrong=True), g.assign(wrong=False)])
        return messages, rows, {"wrong_labels": w["label"].tolist(), "wrong_preds": w["pred"].tolist(),
                                "confusions": [[g, p] for g, p in zip(w["label"], w["pred"])]}

    def evolve_write(self, plan, analysis, style, llm, llm_config, desc, confusion=None):
        from freeal_ray.writing import chat_template, write

        chat = chat_template(llm)
        confusion = confusion or [None] * len(plan)
        prompts = [evokd.render(evokd.writing_messages(self.task, analysis, label, hard, texts, one), chat,
                                lead=f"{self.task.input_name}:") for (label, hard), texts, one in zip(plan, style, confusion)]
        out = write(prompts, llm, llm_config.synth_max_tokens, llm_config.synth_temperature, stop=("\n",), desc=desc)
        written = pd.DataFrame({"text": [evokd.strip_written(t, self.task.input_name) for t in out.texts],
                                "intended": [label for label, _ in plan]})
        return written, out.prompt_tokens, out.output_tokens

    def evolve_label_rows(self, written):
        return written[["id", "text"]]

    def evolve_answers(self, labels, ids):
        return [labels.get(i) for i in ids]

    def evolve_batch(self, kept):
        return kept.assign(label=kept["intended"])[["id", "text", "label"]]

    def evolve_gold_scores(self, model, corpus):
        preds = [p["label"] for p in model.predict(corpus["text"].tolist())]
        scores = M.scores(*M.confusion_of(list(corpus["gold"]), preds, self.task.labels))
        return {"slm_acc": scores["acc"], "slm_macro_f1": scores["macro_f1"], "class_f1": self.evolve_f1(corpus["gold"], preds)}


def carry_to_refinery(batch: pd.DataFrame) -> pd.DataFrame:
    """A scored row as the refinery keeps or re-asks it: this round's SLM prediction and the
    label it had (and how sure the LLM was of it), without the SLM's scratch columns (earlier
    rounds' copies are replaced)."""
    batch = batch.drop(columns=[c for c in ("slm_pred", "prev_label", "prev_confidence", "kept_previous") if c in batch])
    batch = batch.rename(columns={"pred": "slm_pred"})
    batch["prev_label"] = batch["label"]
    batch["prev_confidence"] = batch["confidence"] if "confidence" in batch else np.nan
    return batch.drop(columns=[c for c in SLM_COLUMNS if c in batch])


def keep_surer_answer(batch: pd.DataFrame, rule: str) -> pd.DataFrame:
    """A re-asked row's label (`loop.refine_accept`): with `surer`, the new answer replaces the
    earlier label only where the LLM is surer of it than it was of that label (or had none), so
    a hesitant second answer does not overturn a confident first one; `always` takes every new
    answer, FreeAL's rule. Rows keep `kept_previous` to say which rule held."""
    batch = batch.copy()
    keep = np.zeros(len(batch), dtype=bool)
    if rule == "surer" and "prev_label" in batch:
        label, prev = M.as_strings(batch["label"]), M.as_strings(batch["prev_label"])
        hesitant = _floats(batch["confidence"], -1.0) < _floats(batch["prev_confidence"], -1.0)
        had = prev != None  # noqa: E711 -- elementwise on object arrays
        keep = had & ((label == None) | ((label != prev) & hesitant))  # noqa: E711
        batch.loc[keep, "label"] = batch.loc[keep, "prev_label"]
        batch.loc[keep, "confidence"] = batch.loc[keep, "prev_confidence"]
    batch["kept_previous"] = keep
    return batch


def fill_abstentions(batch: pd.DataFrame) -> pd.DataFrame:
    """Where the LLM abstained, the SLM's prediction becomes the label (source 'slm')."""
    if "slm_pred" not in batch:
        return batch
    missing = batch["label"].isna()
    batch.loc[missing, "label"] = batch.loc[missing, "slm_pred"]
    batch.loc[missing, "source"] = "slm"
    return batch


def _floats(column, missing: float) -> np.ndarray:
    """A column as floats, nulls (None, NaN, pandas' NA) as `missing`."""
    return pd.to_numeric(pd.Series(list(column), dtype=object), errors="coerce").fillna(missing).to_numpy(dtype=float)

