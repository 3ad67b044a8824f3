"""evolve-probe-r: the student's answers on rows it has not trained on, which the next round's LLM
studies. Round 0: the first student on the pool. Round r: the student before round r (it has not
seen this batch) on round r's batch, as EvoKD does: its mistakes on the examples aimed at it are
the next round's wrong samples."""

from __future__ import annotations

import numpy as np

from freeal_ray import tables
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
        kind = ctx.kind
        rows = tables.read_frame(ctx.path(self.rows))
        rows = rows[[c for c in ("id", *kind.evolve_columns, "hard") if c in rows]]
        out = kind.evolve_probe(load_model(ctx.path(self.student)), rows)
        tables.write_part(out, ctx.path(probe_folder(self.r)), "probe")
        known = out[out["right"].notna()] if len(out) else out
        right = known["right"].astype(bool) if len(known) else known.get("right", [])
        metrics = {"probe_rows": len(known), "probe_acc": float(np.mean(right)) if len(known) else None,
                   "probe_class_f1": kind.evolve_f1(list(known.get(kind.label_column, [])), list(known.get("pred", [])))}
        if "hard" in known and len(known):
            for name, hard in (("hard", True), ("easy", False)):
                part = known["hard"] == hard
                metrics[f"{name}_acc"] = float(right[part].mean()) if part.any() else None
        info.update({k: v for k, v in metrics.items() if k != "probe_class_f1"})
        ctx.manifest.evolve_metrics(self.r, **metrics)
