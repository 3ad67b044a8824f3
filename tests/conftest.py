import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import build_tiny_encoder, build_tiny_llm, toy_corpus  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"llm": build_tiny_llm(root / "llm"), "encoder": build_tiny_encoder(root / "encoder")}


@pytest.fixture(scope="session")
def ray_session():
    from freeal_ray.ray_cluster import ensure_ray

    ensure_ray()
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def no_engines():
    """End the engine actors earlier tests started, and wait until their names are free: each holds a
    CPU of the small test cluster for as long as it lives, and a loop that needs its CPUs for Ray Data
    stages would wait for one forever."""
    import time

    import ray

    from freeal_ray import engine_actors

    if ray.is_initialized():
        for pool in engine_actors._POOLS.values():
            for actor in pool:
                ray.kill(actor, no_restart=True)
        engine_actors._POOLS.clear()
        deadline = time.time() + 60
        while time.time() < deadline and any(
            a["name"].startswith("freeal-engine") for a in ray.util.list_named_actors(all_namespaces=True)
        ):
            time.sleep(0.5)
    engine_actors._POOLS.clear()
    yield


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w") as out:
        for row in rows:
            out.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def toy_jsonl(tmp_path):
    return write_jsonl(tmp_path / "corpus.jsonl", toy_corpus(40))


def tiny_overrides(models, output) -> dict:
    """Config for a whole loop on the tiny models that runs in a couple of minutes."""
    return {
        "llm.model": str(models["llm"]),
        "llm.max_model_len": 1024,
        "llm.kv_cache_gib": 1,
        "llm.batch_size": 8,
        "slm.model": str(models["encoder"]),
        "slm.epochs": 3,
        "slm.warmup_epochs": 1,
        "slm.lr": 2e-3,
        "loop.rounds": 1,
        "loop.synth_per_class": 3,
        "loop.prototypes": 6,
        "loop.shots": 4,
        "loop.demos_per_class": 3,
        "output": str(output),
    }
