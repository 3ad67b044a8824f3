"""The one obvious call: `run_freeal(config)` runs (or resumes) the loop the config asks for."""

from __future__ import annotations

from freeal_ray.config import RunConfig
from freeal_ray.loop import FreeALRun, RunResult


def run_freeal(config: RunConfig) -> RunResult:
    """Run (or resume) the whole loop for `config`: FreeAL (text classification, or NER for an entity
    task), or with `loop.mode: evokd`, EvoKD's student distillation."""
    if config.loop.mode == "evokd":
        from freeal_ray.evokd_loop import EvoKDRun

        return EvoKDRun(config).run()
    return FreeALRun(config).run()
