"""Where output goes: the product's own lines and one progress bar per stage to the terminal;
everything Ray, vLLM, torch and transformers say to `<output>/logs/run.log` (`-v` shows it live).

The driver's third-party loggers and Python warnings are routed to the file here. Ray's worker
processes (engine actors, Ray Data and Ray Train workers) write to their own stdout and stderr, which
Ray would stream to the terminal; a Ray setup hook points those two file descriptors at the same file,
so even C++ and OpenMP lines land there.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

LOG_FILE_ENV = "FREEAL_RAY_LOG_FILE"  # set for the driver; Ray carries it to every worker
THIRD_PARTY = ("ray", "vllm", "transformers", "torch", "accelerate", "filelock", "urllib3", "httpx", "openai",
               "huggingface_hub", "sentence_transformers", "gguf", "py.warnings")
_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "VLLM_LOGGING_LEVEL": "ERROR",
}


def log_file_for(output: str | Path) -> Path:
    return Path(output).expanduser() / "logs" / "run.log"


def send_logs_to_file(path: str | Path) -> Path:
    """Route third-party logging and warnings of this process, and of the Ray workers it starts
    (`ensure_ray` reads the variable this sets), to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ[LOG_FILE_ENV] = str(path)
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for terminal in root.handlers:
        if isinstance(terminal, logging.StreamHandler) and not isinstance(terminal, logging.FileHandler):
            terminal.addFilter(lambda record: record.name.startswith("freeal_ray"))
            terminal.setLevel(max(terminal.level, logging.WARNING))
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    for name in THIRD_PARTY:
        quiet_logger(name)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    _quiet_transformers()
    _quiet_ray_data(path.parent)
    return path


def _quiet_ray_data(folder: Path) -> None:
    """Ray Data re-applies its logging config (a terminal handler at INFO) at every dataset execution;
    its supported override is a config file named by RAY_DATA_LOGGING_CONFIG. Ours gives `ray.data` no
    handler of its own, so its records reach the root logger's file handler. (A file handler in the
    config would be opened anew, and never closed, at every execution.)"""
    import json

    config = folder / "ray-data-logging.json"  # JSON is YAML, and needs no YAML writer
    config.write_text(json.dumps({"version": 1, "disable_existing_loggers": False,
                                  "loggers": {"ray.data": {"level": "INFO", "handlers": [], "propagate": True}}}))
    os.environ["RAY_DATA_LOGGING_CONFIG"] = str(config)  # read when ray.data is imported and at every execution


def quiet_logger(name: str) -> None:
    """Drop a library logger's own terminal handlers: its records reach the root's file handler."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
    logger.propagate = True


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


def send_ray_notices_to_log() -> None:
    """Ray's driver prints the raylet's notices ("Task ... failed ... will be retried") straight to
    stdout from a thread of its own, whatever `log_to_driver` says; with a log file they belong
    there, beside the worker output they refer to. (Ray has no setting for this: its printing
    function is wrapped.)"""
    try:
        from ray._private import worker
    except ImportError:
        return
    printer = worker.print_to_stdstream
    if getattr(printer, "freeal_ray_wrapped", False):
        return
    ray_log = logging.getLogger("ray")

    def to_log(data, ignore_prefix: bool):
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                ray_log.warning("(raylet) %s", line)
            return
        printer(data, ignore_prefix)

    to_log.freeal_ray_wrapped = True
    worker.print_to_stdstream = to_log


def redirect_worker_output() -> None:
    """Ray worker setup hook: this worker's stdout and stderr append to the run's log file."""
    path = os.environ.get(LOG_FILE_ENV)
    if not path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return  # a node that cannot reach the output folder keeps Ray's own worker logs
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for name in THIRD_PARTY:
        quiet_logger(name)
