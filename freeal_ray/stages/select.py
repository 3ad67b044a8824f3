"""select-r: round r's demos. Per group (a class, or an entity type), the clean rows the SLM
agrees with, their top `loop.top_ratio` by loss, then k-medoids on their embeddings for
`loop.demos_per_class` representative ones (selection.py).

Two passes over the scores on the driver, no shuffle: the first reads a few bytes a row (group,
loss, the verdicts) and shortlists each group's lowest-loss rows, at most
`loop.medoid_sample_cap` of them; the second reads the embeddings of those rows only. A Ray Data
groupby would move every clean row's embedding across the cluster to keep a handful."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd

from freeal_ray import tables
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.selection import medoids, shortlist


class Select(Stage):
    name = "select-{r}"
    inputs = ("round-{r}/scores",)
    outputs = ("round-{r}/demos",)

    def run(self, ctx: RunContext, info: dict) -> None:
        r, loop, columns = self.r, ctx.cfg.loop, list(ctx.kind.demo_columns)
        scores = ctx.path(f"round-{r}", "scores")
        short = shortlisted(scores, ctx.kind, loop.top_ratio, loop.medoid_sample_cap, loop.seed)
        read = [c for c in columns if c not in ("id", "label")] + ["embedding"]
        rows = short.merge(tables.rows_with_ids(scores, short["id"], read), on="id")
        demos = pd.concat(
            [g.iloc[medoids(np.stack(g["embedding"].to_numpy()), loop.demos_per_class, loop.seed)]
             for _, g in rows.groupby("label", sort=True)] or [pd.DataFrame(columns=columns)],
            ignore_index=True,
        )[columns].assign(origin="corpus")
        if demos["label"].nunique() < len(ctx.kind.demo_groups()) and ctx.has_demos(r - 1):
            # A group with no clean agreeing row keeps its previous demos, so none goes unshown.
            previous = ctx.demos(r - 1)
            missing = previous[~previous["label"].isin(set(demos["label"]))]
            demos = pd.concat([demos, missing], ignore_index=True)
        shutil.rmtree(ctx.path(f"round-{r}", "demos"), ignore_errors=True)
        tables.write_part(demos[[*columns, "origin"]], ctx.path(f"round-{r}", "demos"), "demos")
        info.update(demos=len(demos), per_class=demos["label"].value_counts().to_dict())


def shortlisted(scores, kind, top_ratio: float, sample_cap: int, seed: int) -> pd.DataFrame:
    """id and group of each group's shortlisted demo candidates (selection.shortlist), in the
    order the shortlist gives them."""
    parts = [kind.demo_candidates(batch.to_pandas())[["id", "label", "loss"]]
             for batch in tables.scan(scores, list(kind.candidate_columns))]
    candidates = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "label", "loss"])
    picked = [g.iloc[shortlist(g["loss"].to_numpy(dtype=float), top_ratio, sample_cap, seed)]
              for _, g in candidates.groupby("label", sort=True)]
    short = pd.concat(picked, ignore_index=True) if picked else candidates
    return short[["id", "label"]].astype({"id": str})
