"""annotate-0: round 0's labels. The LLM labels every row (incremental mode: a random
`loop.subset_fraction` of them) in-context with the nearest round-0 demos; or, with
`corpus.llm_label_column`, the labels an LLM already gave are read with no LLM call."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd

from freeal_ray import tables
from freeal_ray.annotation import annotate
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
        ctx.manifest.round_metrics(0, **info, **ctx.label_metrics(ctx.table("round-0", "labels")))


class GivenLabels(Stage):
    """Round 0 from labels an LLM already gave: no synthesis, no LLM call."""

    name = "annotate-0"
    inputs = ("corpus",)
    outputs = ("round-0/labels",)

    def run(self, ctx: RunContext, info: dict) -> None:
        labels_dir = ctx.path("round-0", "labels")
        shutil.rmtree(labels_dir, ignore_errors=True)
        given = ctx.table("corpus").map_batches(_given_labels, fn_kwargs={"labels": tuple(ctx.task.labels)}, batch_format="pandas")
        tables.write_table(given.map_batches(tables.conform, batch_format="pandas"), labels_dir)
        table = ctx.table("round-0", "labels")
        outside = table.filter(lambda r: r["given_label"] is not None and r["label"] is None).count()
        if outside:
            print(f"[freeal_ray] {outside} given labels are outside the label set: counted as abstentions")
        info.update(llm_calls=0, prompt_tokens=0, output_tokens=0, given_outside_label_set=outside)
        ctx.manifest.round_metrics(0, **info, **ctx.label_metrics(table))


def _given_labels(batch: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    known = set(labels)
    batch["label"] = [x if x in known else None for x in batch["given_label"]]
    batch["source"] = "given"
    batch["confidence"] = np.nan
    batch["round"] = 0
    return batch
