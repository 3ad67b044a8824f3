"""expand-r (incremental mode): the LLM annotates a fresh `loop.subset_fraction` of the corpus,
picked by `loop.subset_strategy`, with round r's demos; they join round r's labels as `added`."""

from __future__ import annotations

from freeal_ray import tables
from freeal_ray.annotation import annotate
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.sampling import subset_size
from freeal_ray.stages.subsets import fresh_rows


class Expand(Stage):
    name = "expand-{r}"
    inputs = ("round-{r}/labels",)
    outputs = ("round-{r}/labels/added",)

    def run(self, ctx: RunContext, info: dict) -> None:
        r, n_rows = self.r, ctx.n_rows()
        added_dir = ctx.path(f"round-{r}", "labels", "added")
        remaining = n_rows - tables.count_rows(ctx.path(f"round-{r - 1}", "labels"))
        n = min(subset_size(n_rows, ctx.cfg.loop.subset_fraction), remaining)
        if n > 0:
            annotate(fresh_rows(ctx, r, n, ctx.cfg.loop.subset_strategy), ctx.demos(r), ctx.task, ctx.llm(),
                     ctx.encoder_path(r), ctx.shots, r, str(added_dir), total=n)
        added = ctx.llm_usage(added_dir)
        refined = ctx.llm_usage(ctx.path(f"round-{r}", "answers"))
        info.update(added=added["llm_calls"])
        ctx.manifest.round_metrics(
            r, added_rows=added["llm_calls"], annotated_rows=tables.count_rows(ctx.path(f"round-{r}", "labels")),
            **{k: refined[k] + added[k] for k in added},
        )
