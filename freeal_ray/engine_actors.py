"""The run's engine actors: one engine each, loaded once per run and reused by every stage."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass

import ray

from freeal_ray.engines import Engine, EngineConfig, InstantEngine, VLLMEngine
from freeal_ray.openai_engine import OpenAIEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMSettings:
    """What annotation needs to know about the engine and its actors."""

    engine: str
    engine_config: EngineConfig
    replicas: int
    batch_size: int
    max_text_chars: int
    runner: str = "actors"  # or "ray_data_llm": see ray_llm.py
    save_every_s: float = 30.0  # answers reach disk at least this often (tables.PartWriter)
    prompt_style: str = "plain"  # prompts.PROMPT_STYLES; chat styles read the model's chat template


@ray.remote
class EngineActor:
    """Holds one engine for the whole run: loading it is the slow part, so every stage reuses it."""

    def __init__(self, kind: str, config: EngineConfig):
        self.engine = build_engine(kind, config)
        self.busy_s = 0.0  # time spent answering: against a stage's wall time, how well it kept the engine fed

    def _timed(self, call, *args):
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.busy_s += time.perf_counter() - started

    def choose(self, prompts, choices):
        return self._timed(self.engine.choose, prompts, choices)

    def generate(self, prompts, max_tokens, temperature, stop):
        return self._timed(self.engine.generate, prompts, max_tokens, temperature, stop)

    def extract(self, prompts, schema, max_tokens, temperature=0.0):
        return self._timed(self.engine.extract, prompts, schema, max_tokens, temperature)

    def busy_seconds(self) -> float:
        return self.busy_s

    def compute_threads(self) -> int | None:
        """The CPU engine's torch threads (None for engines that compute elsewhere)."""
        return getattr(self.engine, "threads", None)


_POOLS: dict[tuple, list] = {}  # (job, settings key, replicas, engine) -> actors
MODEL_ENGINES = {"vllm"}  # engines that hold a model in this node's memory, or a GPU's


def engine_pool(settings: LLMSettings) -> list:
    """The run's engine actors, started on first use and reused by every later stage.

    The driver keeps their handles here: Ray ends an actor whose last handle goes away, and
    reloading a model costs minutes on a CPU. One model-holding pool is kept at a time: a run
    uses one, and a process that runs again with another model or seed would otherwise keep every
    earlier engine loaded, until a CPU node ran out of memory (or a GPU, which one engine fills).
    """
    key = hashlib.sha1(repr((settings.engine, settings.engine_config)).encode()).hexdigest()[:12]
    pool_id = (ray.get_runtime_context().get_job_id(), key, settings.replicas, settings.engine)
    if pool_id in _POOLS:
        return _POOLS[pool_id]
    if settings.engine in MODEL_ENGINES:
        _end_pools([p for p in _POOLS if p[3] in MODEL_ENGINES])
    resources = {"num_cpus": 1 if settings.engine == "vllm" else 0.25}  # other engines are clients or nothing
    if settings.engine_config.use_gpu:
        resources["num_gpus"] = settings.engine_config.tensor_parallel_size
    config = dataclasses.replace(settings.engine_config, cpu_share=settings.replicas)
    pool = [
        EngineActor.options(name=f"freeal-engine-{key}-{i}", get_if_exists=True, **resources).remote(
            settings.engine, config
        )
        for i in range(settings.replicas)
    ]
    _POOLS[pool_id] = pool
    return pool


def release_engines() -> int:
    """End every engine actor this process started, freeing their memory; returns how many. A
    process that runs the loop again and again with other engine settings (another seed, another
    model) otherwise keeps each earlier engine loaded, until the node runs out of memory."""
    return _end_pools(list(_POOLS))


def _end_pools(pool_ids: list[tuple]) -> int:
    job = ray.get_runtime_context().get_job_id()
    ended = []
    for pool_id in pool_ids:
        for actor in _POOLS.pop(pool_id):
            if pool_id[0] == job:  # an earlier Ray session's actors ended with it
                ray.kill(actor)
                ended.append(actor)
    _await_ended(ended)
    return len(ended)


def _await_ended(actors: list, timeout_s: float = 120.0) -> None:
    """Wait until each killed actor is gone. `ray.kill` only asks; a call that reaches the actor
    first is still answered, and the next engine would load while the last one holds its memory."""
    deadline = time.monotonic() + timeout_s
    for actor in actors:
        while time.monotonic() < deadline:
            try:
                ray.get(actor.compute_threads.remote(), timeout=max(deadline - time.monotonic(), 0.1))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                break
            time.sleep(0.05)


def build_engine(kind: str, config: EngineConfig) -> Engine:
    if kind == "instant":
        return InstantEngine(config)
    if kind == "vllm":
        return VLLMEngine(config)
    if kind == "openai":
        return OpenAIEngine(config)
    raise ValueError(f"unknown engine {kind!r}")
