"""The one obvious call: `run_freeal(config)` runs (or resumes) the loop for the config's task kind."""

from __future__ import annotations

from freeal_ray.config import RunConfig
from freeal_ray.loop import FreeALRun, RunResult


def run_freeal(config: RunConfig) -> RunResult:
    """Run (or resume) the whole loop for `config`: text classification, or NER for an entity task."""
    return FreeALRun(config).run()
