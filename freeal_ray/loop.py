"""The FreeAL loop: which stage runs when (stages/ holds what each does), and when it stops.

Incremental mode (loop.subset_fraction below 1) annotates a random P of the rows in round 0 and
adds a fresh P after each refinery but the last (expand); the SLM labels the rest in finalize.
"""

from __future__ import annotations

from freeal_ray.config import RunConfig, evolve_rounds
from freeal_ray.model_host import start_model_host
from freeal_ray.pipeline import RunContext, RunResult
from freeal_ray.ray_cluster import ensure_ray
from freeal_ray.stages import (AnnotateRoundZero, Expand, Finalize, GivenLabels, Ingest, Refine, Score, Select,
                               Synthesize, Train)


class FreeALRun:
    """One run of the loop, for any task kind (the kind's adapter is `ctx.kind`)."""

    def __init__(self, config: RunConfig):
        self.ctx = RunContext(config)
        self.task, self.manifest = self.ctx.task, self.ctx.manifest

    def ingest(self) -> None:
        self.ctx.run_stage(Ingest())

    def run(self) -> RunResult:
        ctx, loop = self.ctx, self.ctx.cfg.loop
        ensure_ray()
        start_model_host()
        ctx.pick_annotator()
        self.ingest()
        if ctx.cfg.corpus.llm_label_column:
            ctx.run_stage(GivenLabels())
        else:
            ctx.run_stage(Synthesize())
            ctx.run_stage(AnnotateRoundZero())
        last = 0
        for r in range(1, loop.rounds + 1):
            ctx.run_stage(Train(r))
            ctx.run_stage(Score(r))
            if not ctx.incremental and self._slm_regressed(r):
                break
            ctx.run_stage(Select(r))
            ctx.run_stage(Refine(r))
            last = r
            if ctx.incremental:
                if r < loop.rounds:
                    ctx.run_stage(Expand(r))
                continue  # the annotated set grows every round: no early stop
            changed = self.manifest.data["rounds"][str(r)].get("changed_fraction", 1.0)
            if changed < loop.min_change:
                print(f"[freeal_ray] labels changed for {changed:.2%} of rows in round {r}: stopping early")
                break
        return self.finalize(last)

    def _slm_regressed(self, r: int) -> bool:
        """True when round r's SLM reproduces its (refined) labels markedly less often than round
        r - 1's SLM reproduced the older ones. Labels the refinery improved should be easier to fit,
        so the drop means this SLM trained worse (small corpora, an unlucky seed), and its noisy
        split and demos would steer the LLM wrong: the run ends on round r - 1's labels and SLM."""
        if r < 2:
            return False
        rounds = self.manifest.data["rounds"]
        now, before = rounds[str(r)].get("slm_agreement"), rounds[str(r - 1)].get("slm_agreement")
        if now is None or before is None or before - now <= self.ctx.cfg.loop.max_agreement_drop:
            return False
        reason = f"round {r}'s SLM agrees with {now:.1%} of labels, round {r - 1}'s with {before:.1%}"
        print(f"[freeal_ray] {reason}: keeping round {r - 1}'s labels and SLM")
        self.manifest.round_metrics(r, stopped=reason)
        return True

    def finalize(self, last: int) -> RunResult:
        if self.manifest.stage("finalize").get("rounds", last) != last:
            del self.manifest.data["stages"]["finalize"]  # a finished run resumed with more rounds
        self.ctx.run_stage(Finalize(last))
        if last and evolve_rounds(self.ctx.cfg.loop):
            from freeal_ray.evokd_loop import evolve_after_freeal

            evolve_after_freeal(self.ctx, last)
        from freeal_ray.estimate import compare
        from freeal_ray.report import write_report

        against = compare(self.ctx.out, self.manifest.data)
        if against:  # `freeal-ray estimate` was run on this folder first
            self.manifest.data["estimate"] = against
            self.manifest.save()
        write_report(self.ctx.out, self.manifest.data)
        labels, slm = self.ctx.path("labels"), self.ctx.path("slm")
        return RunResult(self.ctx.out, self.manifest.data["rounds"], labels, slm if slm.exists() else None)
