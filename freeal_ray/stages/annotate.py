"""annotate-0: round 0's labels. The LLM labels every row (incremental mode: a random
`loop.subset_fraction` of them) in-context with the nearest round-0 demos; or, with
`corpus.llm_label_column`, the labels an LLM already gave are read with no LLM call."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pandas as pd

from freeal_ray import tables
from freeal_ray.annotation import annotate
from freeal_ray.errors import CorpusError
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.sampling import subset_size
from freeal_ray.stages.subsets import fresh_rows


class AnnotateRoundZero(Stage):
    name = "annotate-0"
    inputs = ("corpus",)
    outputs = ("round-0/labels",)

    def run(self, ctx: RunContext, info: dict) -> None:
        rows, n = ctx.table("corpus"), ctx.n_rows()
        if ctx.incremental:
            n = subset_size(n, ctx.cfg.loop.subset_fraction)
            rows = fresh_rows(ctx, 0, n, "random")
        demos = ctx.demos(0) if ctx.has_demos(0) else pd.DataFrame(columns=["id", "text", "label"])
        labels = ctx.path("round-0", "labels")
        annotate(rows, demos, ctx.task, ctx.llm(), ctx.encoder_path(), ctx.shots if len(demos) else 0, 0, str(labels), total=n)
        usage = ctx.llm_usage(labels)
        seed = ctx.llm_usage(ctx.path("round-0", "seed-answers"))  # confident demos' zero-shot calls
        info.update({k: usage[k] + seed[k] for k in usage})
        ctx.notice_abstentions(labels, "in round 0")
        ctx.manifest.round_metrics(0, **info, **ctx.label_metrics(tables.LocalTable(ctx.path("round-0", "labels"))))


class GivenLabels(Stage):
    """Round 0 from labels an LLM already gave: no synthesis, no LLM call."""

    name = "annotate-0"
    inputs = ("corpus",)
    outputs = ("round-0/labels",)

    def run(self, ctx: RunContext, info: dict) -> None:
        labels_dir = ctx.path("round-0", "labels")
        shutil.rmtree(labels_dir, ignore_errors=True)
        given = ctx.table("corpus").map_batches(_given_labels, fn_kwargs={"task": ctx.task}, batch_format="pandas")
        tables.write_table(given.map_batches(tables.conform, batch_format="pandas"), labels_dir)
        matched, unmatched = _given_label_counts(labels_dir)
        column = ctx.cfg.corpus.llm_label_column
        if unmatched and not matched:
            raise CorpusError(f"no value in corpus.llm_label_column {column!r} names a label of task {ctx.task.name!r} "
                              f"({', '.join(ctx.task.labels)}) or its verbalizer word; its values: {_shown(unmatched)}")
        outside = sum(unmatched.values())
        if outside:
            print(f"[freeal_ray] {outside} labels in {column!r} are outside the label set, counted as abstentions: "
                  f"{_shown(unmatched)}")
        info.update(llm_calls=0, prompt_tokens=0, output_tokens=0, given_outside_label_set=outside,
                    given_unmatched_values=dict(unmatched.most_common(20)))
        ctx.manifest.round_metrics(0, **info, **ctx.label_metrics(tables.LocalTable(ctx.path("round-0", "labels"))))


def _given_labels(batch: pd.DataFrame, task) -> pd.DataFrame:
    batch["label"] = [task.label_of_given(value) if isinstance(value, str) else None for value in batch["given_label"]]
    batch["source"] = "given"
    batch["confidence"] = np.nan
    batch["round"] = 0
    return batch


def _given_label_counts(folder) -> tuple[int, Counter]:
    """How many given labels matched the label set, and each unmatched value with its count,
    streamed from the table's two columns (a corpus has few distinct unmatched values)."""
    matched, unmatched = 0, Counter()
    for batch in tables.scan(folder, ["given_label", "label"]):
        given, label = batch.column("given_label").to_pylist(), batch.column("label").to_pylist()
        matched += sum(v is not None for v in label)
        unmatched.update(g for g, v in zip(given, label) if g is not None and v is None)
    return matched, unmatched


def _shown(counts: Counter, most: int = 8) -> str:
    shown = ", ".join(f"{value!r} ({n})" for value, n in counts.most_common(most))
    return shown + (f" and {len(counts) - most} more" if len(counts) > most else "")
