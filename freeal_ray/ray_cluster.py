"""Joining or starting the Ray cluster, and what hardware it can have."""

from __future__ import annotations

import logging
import os
import warnings

import ray

from freeal_ray.logs import LOG_FILE_ENV, THIRD_PARTY, quiet_logger, send_ray_notices_to_log

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join (RAY_ADDRESS) or start a Ray cluster, and set Ray Data up for this driver. A local
    cluster gets `num_cpus` logical CPUs (default: the cores, at least 4)."""
    # Ray Train's controller looks at its workers every 2 s by default, so a fit that has finished
    # waits for the next look: a second a fit for nothing. Ray Train passes this variable on from
    # the driver's environment to its controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    if not ray.is_initialized():
        env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR",
               "RAY_DATA_USE_DATASOURCE_V2": "0"}
        env.update({k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "FREEAL_RAY_"))})
        address = os.environ.get("RAY_ADDRESS")
        kwargs = {} if address else {"num_cpus": num_cpus or max(4, os.cpu_count() or 1)}  # stages overlap; see README
        runtime_env = {"env_vars": env}
        to_file = LOG_FILE_ENV in os.environ  # the CLI without -v: workers write to the run's log file
        if to_file:
            runtime_env["worker_process_setup_hook"] = "freeal_ray.logs.redirect_worker_output"
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=not to_file, logging_level="WARNING", **kwargs)
        if to_file:
            for name in THIRD_PARTY:
                quiet_logger(name)  # ray.init installs terminal handlers of its own
            send_ray_notices_to_log()
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Use 'expr' instead of 'fn'")
    # a capped map (the model host's, one LLM client per engine) over fewer blocks than its cap is fine
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own bars count rows; Ray's per-operator bars are noise here
    ctx.print_on_execution_start = False
    # Ray 2.60's Parquet reader (DataSourceV2) starts a pool of FooterReader actors for every
    # read: ~9 s a read on 2 cores against 0.5 s for the V1 reader, and each actor needs a free
    # CPU to start, so a read inside a pipeline that holds every CPU can wait forever.
    ctx.use_datasource_v2 = False
    # A hash shuffle (groupby, aggregate) starts one aggregator per partition, 200 by default: on a
    # small cluster that is seconds of actor start-up for a shuffle of a few thousand rows, with
    # no parallelism to gain past one partition per CPU.
    ctx.default_hash_shuffle_parallelism = shuffle_partitions()


def shuffle_partitions() -> int:
    """One hash-shuffle partition per core the cluster computes on: its CPUs, or on a local
    cluster given more logical CPUs than the machine has cores (to let stages overlap), the cores."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if not os.environ.get("RAY_ADDRESS"):
        cpus = min(cpus, os.cpu_count() or cpus)
    return max(1, min(200, cpus))


def driver_node_has_cpus() -> bool:
    """Whether the driver's node gives Ray CPUs (a KubeRay head started with num-cpus 0 does not)."""
    node = ray.get_runtime_context().get_node_id()
    return any(n["NodeID"] == node and n["Alive"] and n["Resources"].get("CPU", 0) > 0 for n in ray.nodes())


def want_gpu(setting: str) -> bool:
    """A `use_gpu` setting (true, false, auto) resolved against the cluster."""
    if setting in ("true", "false"):
        return setting == "true"
    return cluster_can_have_gpus()


def cluster_can_have_gpus() -> bool:
    """GPUs in the cluster now, or in the node types its autoscaler may start: a cluster that scales
    its GPU workers from zero (cluster/) has none at the instant a run starts, yet its annotators
    and trainers belong on them. Ray Train and Data read the same autoscaler config."""
    if ray.cluster_resources().get("GPU", 0) > 0:
        return True
    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config() or {}
    except Exception:  # an older Ray, or a cluster with no autoscaler: what it has now is all it gets
        log.debug("no autoscaler config to read", exc_info=True)
        return False
    return most.get("GPU", 0) > 0
