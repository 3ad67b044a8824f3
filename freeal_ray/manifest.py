"""The run manifest: config, finished stages and their metrics, in one JSON file beside the tables.

Written atomically after every stage, so a killed run resumes after the last finished stage.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from freeal_ray.errors import ConfigError

# Changing these would make finished stages mean something else; changing others is fine on resume.
_IDENTITY = [("corpus", "path"), ("corpus", "id_column"), ("corpus", "text_column"), ("task",)]


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
    for key in _IDENTITY:
        a, b = old, new
        for part in key:
            a, b = a.get(part), b.get(part)
        if a != b:
            raise ConfigError(
                f"output folder {folder} holds a run with {'.'.join(key)} = {a!r}, not {b!r}; "
                "use a new output folder, or restore the setting to resume that run"
            )
