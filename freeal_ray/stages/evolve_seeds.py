"""evolve-seeds and evolve-pool: where EvoKD starts. The seeds are the task's own examples (0-5 per
class), or with none, examples round-0 synthesis writes; the pool is the student's first test:
`loop.evolve_pool` corpus rows the LLM labels with the seeds as demos, or the seeds themselves
when there is no corpus."""

from __future__ import annotations

import pandas as pd
import ray

from freeal_ray import tables
from freeal_ray.annotation import annotate
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.stages.subsets import seed_rows

SEEDS, POOL = "evolve/round-0/batch", "evolve/round-0/pool"


class EvolveSeeds(Stage):
    name = "evolve-seeds"
    outputs = (SEEDS,)

    def run(self, ctx: RunContext, info: dict) -> None:
        kind = ctx.kind
        if ctx.task.examples:
            seeds = kind.given_examples()
        else:
            corpus = ctx.table("corpus") if ctx.has_corpus() else ray.data.from_pandas(pd.DataFrame({"text": [""]}))
            seeds, counts = kind.synthesize(corpus, ctx.n_rows(), ctx.llm(), ctx.cfg.loop, ctx.cfg.llm)
            info.update(synthesis=counts)
        seeds = seeds[list(dict.fromkeys(["id", *kind.evolve_columns, "label", "origin"]))]
        seeds = seeds.assign(round=0, hard=False, confidence=1.0)
        tables.write_part(seeds, ctx.path(SEEDS), "seeds")
        info.update(seeds=len(seeds), seeds_per_class=seeds["label"].value_counts().to_dict())


class EvolvePool(Stage):
    name = "evolve-pool"
    inputs = (SEEDS,)
    outputs = (POOL,)

    def run(self, ctx: RunContext, info: dict) -> None:
        seeds = tables.read_frame(ctx.path(SEEDS))[["id", *ctx.kind.evolve_columns]]
        if not ctx.has_corpus():
            tables.write_part(seeds, ctx.path(POOL), "seeds")
            info.update(pool=len(seeds), source="seeds")
            return
        n = min(ctx.cfg.loop.evolve_pool, ctx.n_rows())
        annotate(seed_rows(ctx, n), seeds, ctx.task, ctx.llm(), ctx.encoder_path(),
                 min(ctx.shots or 1, len(seeds)), 0, str(ctx.path(POOL)), total=n)
        info.update(pool=tables.count_rows(ctx.path(POOL)), source="corpus, labelled by the LLM",
                    **ctx.llm_usage(ctx.path(POOL)))


class EvolveFromFreeAL(Stage):
    """After FreeAL's last round `r`: its SLM is the first student, its last demos label the written
    examples, and the pool is its clean rows the LLM was surest of, those where the SLM disagrees
    with the label first (the mistakes worth studying)."""

    name = "evolve-start"
    inputs = ("round-{r}/scores",)
    outputs = (SEEDS, POOL, "evolve/round-0/slm")

    def run(self, ctx: RunContext, info: dict) -> None:
        import shutil

        r, n, kind = self.r, ctx.cfg.loop.evolve_pool, ctx.kind
        labelled = kind.labelled
        clean = ctx.table(f"round-{r}", "scores").filter(lambda row: bool(row["clean"]) and labelled(row))
        rank, descending = kind.evolve_rank
        surest = clean.select_columns(list(kind.evolve_pool_columns)).sort(rank, descending=descending)
        candidates = surest.limit(4 * n).to_pandas()
        candidates["agrees"] = [kind.agrees(row) for _, row in candidates.iterrows()]
        pool = candidates.sort_values("agrees", kind="stable").head(n)  # the SLM's disagreements first
        tables.write_part(kind.evolve_pool(pool), ctx.path(POOL), "pool")
        demos = ctx.demos(r) if ctx.has_demos(r) else ctx.demos(0)
        tables.write_part(demos[["id", *kind.evolve_columns]].assign(origin="demo", round=0, hard=False, confidence=1.0),
                          ctx.path(SEEDS), "demos")
        shutil.rmtree(ctx.path("evolve", "round-0", "slm"), ignore_errors=True)
        shutil.copytree(ctx.path(f"round-{r}", "slm"), ctx.path("evolve", "round-0", "slm"))
        info.update(pool=len(pool), pool_disagreements=int((~pool["agrees"]).sum()), demos=len(demos), from_round=r)
