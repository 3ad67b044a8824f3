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

    # Logical CPUs beyond the 2 cores: the engine actors earlier tests started live on (each
    # holds a CPU, and reloading one costs a test its start-up) and the loop's stages still find
    # CPUs to run on.
    ensure_ray(num_cpus=8)
    yield
    import ray

    ray.shutdown()


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
        "slm.min_steps": 0,  # the tiny encoder learns its planted tasks in a few steps
        "slm.lr": 2e-3,
        "loop.rounds": 1,
        "loop.synth_per_class": 3,
        "loop.prototypes": 6,
        "loop.shots": 4,
        "loop.demos_per_class": 3,
        "output": str(output),
    }
