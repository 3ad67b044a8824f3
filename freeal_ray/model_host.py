"""The run's model host: one long-lived process for the stages' model work on the driver's node.

Ray Data starts a stage's actor pool in fresh processes, and a process that imports torch and
transformers takes 8-11 s to start on a 2-core CPU machine, so every round's prompt builder and
scorer paid that again (a one-round toy run spent more time starting them than working). Where the
driver's node computes (it has CPUs for Ray), a run keeps one host actor there instead: a stage maps
its batches with a thin task that hands each batch to the host, which builds the stage's callable
once (a prompt builder with its encoder and index, a scorer with its checkpoint), keeps the last few
and uses every core torch may. Elsewhere (a CPU-less head node, GPU scoring) stages keep their actor
pools, which a cluster spreads over its workers and which hand a GPU back when the stage ends.
"""

from __future__ import annotations

import importlib
import uuid
from collections import OrderedDict

import ray

from freeal_ray.ray_cluster import driver_node_has_cpus

KEPT = 3  # callables a host keeps: a stage's, the one before it, and a model two stages share


def _resolve(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@ray.remote(num_cpus=0, max_restarts=0)
class ModelHost:
    """Builds `path(**kwargs)` once per key and calls it on batches; the least recently used
    callable goes when more than KEPT are held."""

    def __init__(self):
        from transformers import AutoModel, AutoTokenizer  # noqa: F401  (the slow imports, paid while stages before the first batch run)

        from freeal_ray.checkpoint import actor_threads

        actor_threads("cpu")  # the host's work is the only model work of its stage: every core, as a scorer actor's
        self.callables: OrderedDict = OrderedDict()

    def call(self, key: str, path: str, kwargs_box: list, batch):
        if key not in self.callables:
            self.callables[key] = _resolve(path)(**ray.get(kwargs_box[0]))
            while len(self.callables) > KEPT:
                self.callables.popitem(last=False)
        self.callables.move_to_end(key)
        return self.callables[key](batch)


_hosts: dict = {}  # job -> handle: a named actor dies with its last reference, so the driver keeps one


def model_host():
    """This driver's host actor, started on its node on first use and kept until the driver ends."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    context = ray.get_runtime_context()
    job = context.get_job_id()
    if job not in _hosts:
        node = NodeAffinitySchedulingStrategy(context.get_node_id(), soft=False)
        _hosts[job] = ModelHost.options(name=f"freeal-model-host-{job}", get_if_exists=True,
                                        scheduling_strategy=node).remote()
    return _hosts[job]


def start_model_host() -> None:
    """Start the host at the run's start where it will serve, so that its imports overlap the stages
    before its first batch (ingest, the engine's load) instead of delaying that batch."""
    if driver_node_has_cpus():
        model_host()


def _on_host(batch, host, key: str, path: str, kwargs_box: list):
    return ray.get(host.call.remote(key, path, kwargs_box, batch))


def map_with_model(ds: ray.data.Dataset, path: str, kwargs: dict, pool: dict, hosted: bool = True,
                   **map_args) -> ray.data.Dataset:
    """`ds.map_batches` with the callable class at `path` ("module:Class") built from `kwargs`: on
    the host where `hosted` and the driver's node computes, else as an actor pool (`pool`: compute
    and resources). The path is a string so the thin tasks never import the model's module."""
    if not (hosted and driver_node_has_cpus()):
        return ds.map_batches(_resolve(path), fn_constructor_kwargs=kwargs, **pool, **map_args)
    # kwargs (a demo pool, a task) travel once through the object store; boxed so Ray hands the
    # host the reference and it reads the value only when it builds the callable
    box = [ray.put(kwargs)]
    fn_kwargs = {"host": model_host(), "key": uuid.uuid4().hex, "path": path, "kwargs_box": box}
    # two tasks in flight: one batch travels while the host works on the other. Uncapped, Ray Data
    # would start a task per block, each a worker process blocked on the host holding its batch.
    return ds.map_batches(_on_host, fn_kwargs=fn_kwargs, num_cpus=0.1,
                          compute=ray.data.TaskPoolStrategy(size=2), **map_args)
