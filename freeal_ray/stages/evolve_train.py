"""evolve-train-r: the student trains on the seeds and every batch kept so far (EvoKD's review
history: earlier batches are replayed, so what the student learnt before is not forgotten). The
labels were checked by a labelling call, so training is plain cross-entropy; with a corpus that has
gold labels, the student is then scored on it (per-class F1 per round, for the report)."""

from __future__ import annotations

import dataclasses
import math

from freeal_ray import tables
from freeal_ray.model import load_model
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.stages.evolve_seeds import SEEDS
from freeal_ray.ray_cluster import want_gpu
from freeal_ray.stages.train import train_settings
from freeal_ray.training import train_slm
from freeal_ray.training.settings import with_min_steps

GOLD_ROWS = 2000  # corpus rows the student is scored on per round, when the corpus has gold labels


def batch_folder(r: int) -> str:
    return SEEDS if r == 0 else f"evolve/round-{r}/batch"


def student_folder(r: int) -> str:
    return f"evolve/round-{r}/slm"


class EvolveTrain(Stage):
    name = "evolve-train-{r}"
    inputs = ("evolve/round-{r}/batch",)
    outputs = ("evolve/round-{r}/slm",)

    def run(self, ctx: RunContext, info: dict) -> None:
        info.update(train_student(ctx, self.r, history_folders(ctx, self.r), student_folder(self.r),
                                 f"EvoKD student, round {self.r}"), batches=self.r + 1)
        ctx.manifest.evolve_metrics(self.r, training_rows=info["rows"], **_gold_scores(ctx, student_folder(self.r)))


def train_student(ctx: RunContext, r: int, folders: list[str], out: str, desc: str) -> dict:
    """Fit a student on the rows of `folders` into `out`, as round r trains it (its seed included);
    returns the rows, epochs and copies per epoch. The FreeAL+EvoKD bench calls it on FreeAL's labels
    alone, as the control for what the written batches add."""
    columns = list(ctx.kind.evolve_columns)
    parts = [p for f in folders if (p := tables.read_table(ctx.path(f), columns=columns))]
    history = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    n, s = history.count(), ctx.cfg.slm
    settings, copies = train_settings(ctx, r), 1
    if ctx.cfg.loop.mode == "evokd":  # checked labels on a few rows: plain cross-entropy, enough steps
        batch = min(s.batch_size, n)
        settings = dataclasses.replace(settings, warmup_epochs=settings.epochs, batch_size=batch)
        # Each epoch costs Ray Train a second or two whatever its size, so a few rows are
        # repeated within an epoch (and shuffled) rather than run for dozens of tiny epochs.
        copies = max(1, math.ceil(ctx.cfg.loop.evolve_min_steps * batch / (n * settings.epochs)))
    else:  # after FreeAL: its labels, trained as its rounds were, step floor included
        settings = with_min_steps(settings, n, s.num_workers, s.min_steps)
    rows = history.map_batches(_repeated, fn_kwargs={"copies": copies}, batch_format="pandas") if copies > 1 else history
    rows = rows.map_batches(ctx.kind.training_rows, batch_format="pandas")
    train_slm(rows, ctx.kind.train_settings(settings), str(ctx.path(out)), s.num_workers,
              want_gpu(s.use_gpu), objective=ctx.kind.objective, desc=desc)
    return {"rows": n, "epochs": settings.epochs, "copies": copies}


def _repeated(batch, copies: int):
    import pandas as pd

    return pd.concat([batch] * copies, ignore_index=True)


def history_folders(ctx: RunContext, r: int) -> list[str]:
    """What round r's student trains on: the seeds (after FreeAL: its last round's labels, robustly,
    as FreeAL's SLM did) and every batch kept up to round r."""
    if ctx.cfg.loop.mode == "freeal":
        base = f"round-{ctx.manifest.stage('evolve-start')['from_round']}/labels"
    else:
        base = SEEDS
    return [base, *[batch_folder(k) for k in range(1, r + 1)]]


def _gold_scores(ctx: RunContext, folder: str) -> dict:
    """The student against the corpus's gold labels (its first GOLD_ROWS rows), where it has them."""
    if not (ctx.has_corpus() and ctx.has_gold()):
        return {}
    rows = ctx.table("corpus").select_columns(list(ctx.kind.evolve_gold_columns)).limit(GOLD_ROWS).to_pandas()
    return ctx.kind.evolve_gold_scores(load_model(ctx.path(folder)), rows)
