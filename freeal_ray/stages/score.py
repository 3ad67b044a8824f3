"""score-r: round r's SLM scores every labelled row (prediction, loss against the label,
embedding), and a two-component GMM on those losses splits the rows into clean and noisy.

This split, on the trained SLM's losses over all rows, is the one the rest of the round acts
on: select takes demos from clean rows only, and the refinery re-asks the noisy ones. (Training
fits a GMM of its own on its losses every epoch, to weigh its loss terms; that one stays inside
training.) The split is made after training because a row's loss then reflects what the SLM
learnt from every other row, not the noise it was still fitting."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd

from freeal_ray import tables
from freeal_ray.noise import fit_loss_gmm
from freeal_ray.pipeline import RunContext, Stage


class Score(Stage):
    name = "score-{r}"
    inputs = ("round-{prev}/labels",)
    outputs = ("round-{r}/scores",)

    def run(self, ctx: RunContext, info: dict) -> None:
        r = self.r
        partial, final = ctx.path(f"round-{r}", "scores.partial"), ctx.path(f"round-{r}", "scores")
        for p in (partial, final):
            shutil.rmtree(p, ignore_errors=True)
        scored = ctx.scored(ctx.table(f"round-{r - 1}", "labels"), r)
        tables.write_table(scored.map_batches(tables.conform, batch_format="pandas"), partial)
        losses = _loss_sample(partial, ctx.cfg.loop.seed)
        gmm = fit_loss_gmm(losses[np.isfinite(losses)], seed=ctx.cfg.loop.seed)
        split = tables.read_table(partial).map_batches(
            _add_clean, fn_kwargs={"gmm": gmm, "threshold": ctx.cfg.slm.gmm_threshold}, batch_format="pandas")
        tables.write_table(split.map_batches(tables.conform, batch_format="pandas"), final)
        shutil.rmtree(partial)
        scores = tables.LocalTable(final)
        clean = tables.LocalTable(final, where="clean")
        n, n_clean = tables.count_rows(final), tables.count_where(final, lambda row: bool(row["clean"]), ["clean"])
        # Over labelled rows only: an abstention cannot agree, and counting it would make a round
        # with more abstentions look like a worse SLM to the early-stop guard.
        columns = list(ctx.kind.predicate_columns)
        agreement = tables.count_where(final, ctx.kind.agrees, columns) / max(tables.count_where(final, ctx.kind.labelled, columns), 1)
        info.update(gmm=gmm.__dict__, clean=n_clean, rows=n, agreement=agreement)
        metrics = {"clean_fraction": n_clean / max(n, 1), "slm_agreement": agreement}
        if ctx.has_gold():
            metrics.update(ctx.kind.score_metrics(scores, clean, n_clean))
        ctx.manifest.round_metrics(r, **metrics)


def _add_clean(batch: pd.DataFrame, gmm, threshold: float) -> pd.DataFrame:
    """Each row's chance of being clean under the GMM; a row with no loss (no label) is not clean."""
    loss = batch["loss"].to_numpy(dtype=float)
    p = np.where(np.isfinite(loss), gmm.p_clean(np.nan_to_num(loss, nan=gmm.hi)), 0.0)
    batch["p_clean"] = p
    batch["clean"] = p > threshold
    return batch


def _loss_sample(folder, seed: int, cap: int = 200_000) -> np.ndarray:
    """Up to about `cap` losses for fitting the GMM: five numbers are learnt, so a sample does."""
    share, rng = min(1.0, cap / max(tables.count_rows(folder), 1)), np.random.default_rng(seed)
    parts = []
    for batch in tables.scan(folder, ["loss"]):
        loss = batch.column("loss").to_numpy(zero_copy_only=False).astype(float)
        parts.append(loss if share >= 1.0 else loss[rng.random(len(loss)) < share])
    return np.concatenate(parts) if parts else np.zeros(0)
