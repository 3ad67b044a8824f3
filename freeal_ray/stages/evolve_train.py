"""evolve-train-r: the student trains on the seeds and every batch kept so far (EvoKD's review
history: earlier batches are replayed, so what the student learnt before is not forgotten). The
labels were checked by a labelling call, so training is plain cross-entropy; with a corpus that has
gold labels, the student is then scored on it (per-class F1 per round, for the report)."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import ray

from freeal_ray import metrics as M
from freeal_ray import tables
from freeal_ray.evokd import class_f1
from freeal_ray.model import load_model
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.ray_cluster import want_gpu
from freeal_ray.stages.train import train_settings
from freeal_ray.training import train_slm

GOLD_ROWS = 2000  # corpus rows the student is scored on per round, when the corpus has gold labels


def batch_folder(r: int) -> str:
    return f"evolve/round-{r}/batch"


def student_folder(r: int) -> str:
    return f"evolve/round-{r}/slm"


class EvolveTrain(Stage):
    name = "evolve-train-{r}"
    inputs = ("evolve/round-{r}/batch",)
    outputs = ("evolve/round-{r}/slm",)

    def run(self, ctx: RunContext, info: dict) -> None:
        history = pd.concat([tables.read_frame(ctx.path(batch_folder(k))) for k in range(self.r + 1)], ignore_index=True)
        rows = ray.data.from_pandas(history[["text", "label"]]).map_batches(ctx.kind.training_rows, batch_format="pandas")
        s = ctx.cfg.slm
        steps_per_epoch = max(1, math.ceil(len(history) / s.batch_size))
        epochs = max(s.epochs, math.ceil(ctx.cfg.loop.evolve_min_steps / steps_per_epoch))
        settings = dataclasses.replace(train_settings(ctx, self.r), epochs=epochs, warmup_epochs=epochs)
        train_slm(rows, ctx.kind.train_settings(settings), str(ctx.path(student_folder(self.r))), s.num_workers,
                  want_gpu(s.use_gpu), objective=ctx.kind.objective, desc=f"EvoKD student, round {self.r}")
        info.update(rows=len(history), epochs=epochs, batches=self.r + 1)
        ctx.manifest.evolve_metrics(self.r, training_rows=len(history), **_gold_scores(ctx, self.r))


def _gold_scores(ctx: RunContext, r: int) -> dict:
    """The student against the corpus's gold labels (its first GOLD_ROWS rows), where it has them."""
    if not (ctx.has_corpus() and ctx.has_gold()):
        return {}
    rows = ctx.table("corpus").select_columns(["text", "gold"]).limit(GOLD_ROWS).to_pandas()
    preds = [p["label"] for p in load_model(ctx.path(student_folder(r))).predict(rows["text"].tolist())]
    scores = M.scores(*M.confusion_of(list(rows["gold"]), preds, ctx.task.labels))
    return {"slm_acc": scores["acc"], "slm_macro_f1": scores["macro_f1"],
            "class_f1": class_f1(list(rows["gold"]), preds, ctx.task.labels)}
