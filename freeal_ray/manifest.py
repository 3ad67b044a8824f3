"""The run manifest: config, finished stages and their metrics, in one JSON file beside the tables.

Written atomically after every stage, so a killed run resumes after the last finished stage.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from freeal_ray.errors import ConfigError

# What a resumed run may change: how far it goes and how it is computed, not what it computes.
# Every other field shaped what the finished stages hold (corpus.limit the rows, subset_fraction
# which rows the LLM saw, gold_column the metrics, ...), so a change to it is refused.
SAFE_TO_CHANGE = frozenset({
    "output", "loop.rounds", "loop.evolve_rounds", "loop.min_change", "loop.max_agreement_drop",
    "llm.batch_size", "llm.replicas", "llm.save_every_s", "llm.cpu_threads", "llm.kv_cache_gib", "llm.runner",
    "llm.use_gpu", "llm.api_base", "llm.api_key_env", "llm.max_concurrency", "llm.requests_per_minute",
    "llm.max_retries", "slm.use_gpu", "slm.num_workers",
})


class Manifest:
    def __init__(self, folder: Path, config: dict):
        self.path = folder / "manifest.json"
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
            _check_same_run(self.data["config"], config, folder)
            self.data["config"] = config
        else:
            self.data = {"config": config, "stages": {}, "rounds": {}, "created": time.time()}
        folder.mkdir(parents=True, exist_ok=True)
        self.save()

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def finish(self, stage: str, seconds: float, **info) -> None:
        self.data["stages"][stage] = {"seconds": round(seconds, 2), "finished": time.time(), **info}
        self.save()

    def stage(self, stage: str) -> dict:
        return self.data["stages"].get(stage, {})

    def round_metrics(self, round_: int, **metrics) -> None:
        self.data["rounds"].setdefault(str(round_), {}).update(metrics)
        self.save()

    def evolve_metrics(self, round_: int, **metrics) -> None:
        """EvoKD's figures for one of its rounds (apart from FreeAL's rounds, which may run before them)."""
        self.data.setdefault("evolve", {}).setdefault(str(round_), {}).update(metrics)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)


def _check_same_run(old: dict, new: dict, folder: Path) -> None:
    """Refuse a resume that changes a field the finished stages depend on, naming it. A field the
    old run's config lacks (added to freeal_ray since) is taken as unchanged."""
    before, after = _flat(old), _flat(new)
    changed = [k for k in after if k in before and before[k] != after[k] and k not in SAFE_TO_CHANGE]
    if changed:
        shown = "; ".join(f"{k} = {before[k]!r}, now {after[k]!r}" for k in changed)
        raise ConfigError(
            f"output folder {folder} holds a run made with other settings ({shown}): its finished stages depend on "
            f"them. Use a new output folder, or restore the setting to resume that run. Safe to change on resume: "
            f"{', '.join(sorted(SAFE_TO_CHANGE - {'output'}))}"
        )


def _flat(config: dict, prefix: str = "") -> dict:
    """Sections to dotted fields; the task (a name or a mapping) stays whole."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key in ("corpus", "llm", "slm", "loop"):
            out.update(_flat(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out
