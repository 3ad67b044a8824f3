"""Which rows a stage works on, drawn by row id so a resumed stage asks about the same rows."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import ray

from freeal_ray import tables
from freeal_ray.pipeline import RunContext
from freeal_ray.sampling import draw_cutoff, row_draws, uncertainty


def seed_rows(ctx: RunContext, n: int) -> ray.data.Dataset:
    """A random `n` corpus rows, by a draw of their ids."""
    return smallest_draws(ctx.table("corpus"), n, ctx.n_rows(), ctx.cfg.loop.seed + 1).drop_columns(["draw"])


def smallest_draws(ds: ray.data.Dataset, n: int, n_rows: int, seed: int) -> ray.data.Dataset:
    """The `n` rows of `ds` (about `n_rows` of them) with the smallest draws, in draw order: the
    rows under a cutoff are sorted, not the whole corpus, and the full sort is the fallback."""
    keyed = ds.map_batches(with_draw, fn_kwargs={"seed": seed}, batch_format="pandas")
    cutoff = draw_cutoff(n, n_rows)
    if cutoff < 1.0:
        under = keyed.filter(lambda row, q=cutoff: row["draw"] < q).materialize()
        if under.count() >= n:
            return under.sort(["draw", "id"]).limit(n)
    return keyed.sort(["draw", "id"]).limit(n)


def fresh_rows(ctx: RunContext, r: int, n: int, strategy: str) -> ray.data.Dataset:
    """The `n` rows round r adds (incremental mode), picked once and written, so a resumed stage
    asks about the same rows (an SLM re-scoring could break ties differently)."""
    folder = ctx.path(f"round-{r}", "fresh")
    if not folder.exists():
        partial = folder.with_name("fresh.partial")
        shutil.rmtree(partial, ignore_errors=True)
        pool = ctx.unannotated(r - 1) if r > 0 else ctx.table("corpus")
        if strategy == "random":
            pool_rows = ctx.n_rows() - (tables.count_rows(ctx.path(f"round-{r - 1}", "labels")) if r > 0 else 0)
            picked = smallest_draws(pool, n, pool_rows, ctx.cfg.loop.seed)
        else:
            drop = list(ctx.kind.scratch_columns)
            keyed = ctx.scored(pool, r).map_batches(_with_uncertainty, fn_kwargs={"strategy": strategy, "drop": drop},
                                                    batch_format="pandas")
            picked = keyed.sort(["draw", "id"], descending=[True, False]).limit(n)
        tables.write_table(picked.drop_columns(["draw"]).map_batches(tables.conform, batch_format="pandas"), partial)
        partial.rename(folder)
    return ctx.table(f"round-{r}", "fresh")


def with_draw(batch: pd.DataFrame, seed: int) -> pd.DataFrame:
    batch["draw"] = row_draws(batch["id"], seed)
    return batch


def _with_uncertainty(batch: pd.DataFrame, strategy: str, drop: list[str]) -> pd.DataFrame:
    """Scored rows back to corpus rows, keyed by how unsure the SLM is (sorted on as `draw`)."""
    batch["draw"] = uncertainty(np.stack(batch["probs"].to_numpy()), strategy)
    return batch.drop(columns=[c for c in drop if c in batch])
