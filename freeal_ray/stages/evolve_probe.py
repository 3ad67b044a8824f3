"""evolve-probe-r: the student's answers on rows it has not trained on, which the next round's LLM
studies. Round 0: the first student on the pool. Round r: the student before round r (it has not
seen this batch) on round r's batch, as EvoKD does: its mistakes on the examples aimed at it are
the next round's wrong samples."""

from __future__ import annotations

import numpy as np

from freeal_ray import tables
from freeal_ray.evokd import class_f1
from freeal_ray.model import load_model
from freeal_ray.pipeline import RunContext, Stage
from freeal_ray.stages.evolve_seeds import POOL
from freeal_ray.stages.evolve_train import batch_folder, student_folder


def probe_folder(r: int) -> str:
    return f"evolve/round-{r}/probe"


class EvolveProbe(Stage):
    name = "evolve-probe-{r}"
    outputs = ("evolve/round-{r}/probe",)

    def __init__(self, r: int = 0):
        super().__init__(r)
        self.rows, self.student = (POOL, student_folder(0)) if r == 0 else (batch_folder(r), student_folder(r - 1))
        self.inputs = (self.rows,)

    def run(self, ctx: RunContext, info: dict) -> None:
        rows = tables.read_frame(ctx.path(self.rows))
        keep = [c for c in ("id", "text", "label", "hard") if c in rows]
        out = rows[keep].copy()
        predicted = load_model(ctx.path(self.student)).predict(out["text"].tolist()) if len(out) else []
        out["pred"] = [p["label"] for p in predicted]
        out["pred_confidence"] = [p["confidence"] for p in predicted]
        tables.write_part(out, ctx.path(probe_folder(self.r)), "probe")
        known = out[out["label"].map(lambda v: isinstance(v, str))] if len(out) else out
        right = (known["pred"] == known["label"]) if len(known) else known.get("label", [])
        metrics = {"probe_rows": len(known), "probe_acc": float(np.mean(right)) if len(known) else None,
                   "probe_class_f1": class_f1(list(known.get("label", [])), list(known.get("pred", [])), ctx.task.labels)}
        if "hard" in known and len(known):
            for name, hard in (("hard", True), ("easy", False)):
                part = known["hard"] == hard
                metrics[f"{name}_acc"] = float(right[part].mean()) if part.any() else None
        info.update({k: v for k, v in metrics.items() if k != "probe_class_f1"})
        ctx.manifest.evolve_metrics(self.r, **metrics)
