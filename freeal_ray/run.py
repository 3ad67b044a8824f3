"""The one obvious call: `run_freeal(config)` runs (or resumes) the loop for the config's task kind."""

from __future__ import annotations

from freeal_ray.config import RunConfig
from freeal_ray.entity_loop import EntityRun
from freeal_ray.loop import FreeALRun, RunResult
from freeal_ray.task import EntityTask


def run_freeal(config: RunConfig) -> RunResult:
    """Run (or resume) the whole loop for `config`: text classification, or NER for an entity task."""
    run = EntityRun if isinstance(config.resolved_task(), EntityTask) else FreeALRun
    return run(config).run()
