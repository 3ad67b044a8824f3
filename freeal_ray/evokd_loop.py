"""EvoKD's order (stages/evolve_*.py hold what each step does):

start:    [ingest] -> evolve-seeds -> evolve-pool (the student's first test) -> evolve-train-0 -> evolve-probe-0
round r:  evolve-analyse (LLM: the student's weaknesses) -> evolve-write (LLM: hard and easy examples)
          -> evolve-label (LLM, a separate call; disagreeing and copied examples dropped)
          -> evolve-probe (the student before this round, on the new batch) -> evolve-train (seeds + every batch)
final:    evolve-finalize (the student as slm/, the examples table, the corpus labelled by the student)

After FreeAL (loop.evolve_rounds > 0 in freeal mode), evolve-start takes FreeAL's last SLM as the
first student and its clean, surest rows as the pool; the rounds train on FreeAL's labels and the
batches, and the output labels stay FreeAL's.
"""

from __future__ import annotations

from freeal_ray.config import RunConfig, evolve_rounds
from freeal_ray.model_host import start_model_host
from freeal_ray.pipeline import RunContext, RunResult
from freeal_ray.ray_cluster import ensure_ray
from freeal_ray.stages import Ingest
from freeal_ray.stages.evolve_analyse import EvolveAnalyse
from freeal_ray.stages.evolve_finalize import EvolveFinalize
from freeal_ray.stages.evolve_label import EvolveLabel
from freeal_ray.stages.evolve_probe import EvolveProbe
from freeal_ray.stages.evolve_seeds import EvolveFromFreeAL, EvolvePool, EvolveSeeds
from freeal_ray.stages.evolve_train import EvolveTrain
from freeal_ray.stages.evolve_write import EvolveWrite


class EvoKDRun:
    """Standalone EvoKD (loop.mode evokd): a student distilled from a label set and a few seeds."""

    def __init__(self, config: RunConfig):
        self.ctx = RunContext(config)

    def run(self) -> RunResult:
        ctx = self.ctx
        ensure_ray()
        start_model_host()
        ctx.pick_annotator()
        if ctx.has_corpus():
            ctx.run_stage(Ingest())
        for stage in (EvolveSeeds(), EvolvePool(), EvolveTrain(0), EvolveProbe(0)):
            ctx.run_stage(stage)
        last = evolve(ctx, evolve_rounds(ctx.cfg.loop))
        if ctx.manifest.stage("evolve-finalize").get("rounds", last) != last:
            del ctx.manifest.data["stages"]["evolve-finalize"]  # a finished run resumed with more rounds
        ctx.run_stage(EvolveFinalize(last))
        from freeal_ray.report import write_report

        write_report(ctx.out, ctx.manifest.data)
        return RunResult(ctx.out, ctx.manifest.data.get("evolve", {}), ctx.path("labels"), ctx.path("slm"))


def evolve_after_freeal(ctx: RunContext, last: int) -> None:
    """EvoKD rounds on top of FreeAL's round `last`; the last student replaces slm/."""
    for stage in (EvolveFromFreeAL(last), EvolveProbe(0)):
        ctx.run_stage(stage)
    rounds = evolve(ctx, evolve_rounds(ctx.cfg.loop))
    if ctx.manifest.stage("evolve-finalize").get("rounds", rounds) != rounds:
        del ctx.manifest.data["stages"]["evolve-finalize"]
    ctx.run_stage(EvolveFinalize(rounds, label_corpus=False))


def evolve(ctx: RunContext, rounds: int, first: int = 1) -> int:
    """Rounds `first` to `rounds`; returns the last one."""
    for r in range(first, rounds + 1):
        for stage in (EvolveAnalyse(r), EvolveWrite(r), EvolveLabel(r), EvolveProbe(r), EvolveTrain(r)):
            ctx.run_stage(stage)
    return max(rounds, 0)
