"""select-r: round r's demos. Per group (a class, or an entity type), the clean rows the SLM
agrees with, their top `loop.top_ratio` by loss, then k-medoids on their embeddings for
`loop.demos_per_class` representative ones (selection.py)."""

from __future__ import annotations

import shutil

import pandas as pd

from freeal_ray import tables
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.selection import select_demos


class Select(Stage):
    name = "select-{r}"
    inputs = ("round-{r}/scores",)
    outputs = ("round-{r}/demos",)

    def run(self, ctx: RunContext, info: dict) -> None:
        r, loop, columns = self.r, ctx.cfg.loop, list(ctx.kind.demo_columns)
        candidates = ctx.kind.demo_candidates(ctx.table(f"round-{r}", "scores"))
        demos = pd.DataFrame()
        if candidates.limit(1).count():  # Ray's groupby fails on a dataset with no rows at all
            demos = candidates.groupby("label").map_groups(
                select_demos, fn_kwargs=dict(top_ratio=loop.top_ratio, k=loop.demos_per_class,
                                             sample_cap=loop.medoid_sample_cap, seed=loop.seed, columns=tuple(columns)),
                batch_format="pandas",
            ).to_pandas()
        if demos.empty:
            demos = pd.DataFrame(columns=[*columns, "origin"])
        if (demos.empty or demos["label"].nunique() < len(ctx.kind.demo_groups())) and ctx.has_demos(r - 1):
            # A group with no clean agreeing row keeps its previous demos, so none goes unshown.
            previous = ctx.demos(r - 1)
            missing = previous[~previous["label"].isin(set(demos["label"]))]
            demos = pd.concat([demos, missing], ignore_index=True)
        shutil.rmtree(ctx.path(f"round-{r}", "demos"), ignore_errors=True)
        tables.write_part(demos[[*columns, "origin"]], ctx.path(f"round-{r}", "demos"), "demos")
        info.update(demos=len(demos), per_class=demos["label"].value_counts().to_dict())
