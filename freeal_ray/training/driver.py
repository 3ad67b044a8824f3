"""The driver's side of an SLM fit: a Ray Train TorchTrainer over the rows, a progress bar of rows
trained, and the checkpoint moved into place only once it is whole."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import ray

from freeal_ray.ray_cluster import driver_node_has_cpus
from freeal_ray.training.settings import TrainSettings
from freeal_ray.training.worker import train_loop


def train_slm(
    rows: ray.data.Dataset,
    settings: TrainSettings,
    out_dir: str,
    num_workers: int,
    use_gpu: bool,
    objective: str = "sentences",
    desc: str = "SLM training",
    total_rows: int | None = None,
) -> dict:
    """Fit the SLM on `rows` (text, label_idx[, view]); write the checkpoint to `out_dir`. With
    objective "tokens", the NER tagger on `rows` (tokens, tag_idx: a tag index per word, -1 for none).
    `total_rows`, where the caller knows it, spares a pass over `rows` to count them for the bar."""
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray.util.queue import Queue

    out = Path(out_dir)
    storage = Path(tempfile.mkdtemp(prefix="freeal-train-"))
    here = fits_here(num_workers, use_gpu)
    progress = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"settings": asdict(settings), "progress": progress, "objective": objective,
                           # local mode keeps no copy of a reported checkpoint: the loop writes it where it stays
                           "checkpoint_dir": str(storage / "checkpoint") if here else None},
        # num_workers=0 is Ray Train's local mode: the loop runs in this process
        scaling_config=ScalingConfig(num_workers=0 if here else num_workers, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=str(storage), name="slm"),
        datasets={"train": rows},
        # one worker reads the whole dataset itself: a split would start a coordinator actor per fit
        dataset_config=DataConfig(datasets_to_split="all" if num_workers > 1 else []),
    )
    try:
        total = rows.count() if total_rows is None else total_rows
        result = _fit_with_progress(trainer, progress, total * settings.epochs, desc)
    finally:
        progress.shutdown()
    if result.checkpoint is None:
        raise RuntimeError(f"SLM training ended without a checkpoint: {result.error}")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with result.checkpoint.as_directory() as ckpt:
        shutil.copytree(ckpt, staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    shutil.rmtree(storage, ignore_errors=True)
    return dict(result.metrics or {})


def fits_here(num_workers: int, use_gpu: bool) -> bool:
    """Whether a fit runs in this process (Ray Train's local mode) rather than in worker actors: a
    one-worker CPU fit on a one-node cluster that is this driver's node, such as a laptop's local
    Ray. A worker actor there would cost a fresh process, its torch and transformers imports and
    Ray Train's controller, about 20 s a fit on a 2-core machine, for the same training on the same
    cores. Anywhere else (GPUs, several workers, a cluster's head with no CPUs) the workers stay."""
    if num_workers != 1 or use_gpu:
        return False
    return sum(n["Alive"] for n in ray.nodes()) == 1 and driver_node_has_cpus()


def _fit_with_progress(trainer, progress, total_rows: int, desc: str):
    """`trainer.fit()` in a thread, with a bar of rows trained (epochs x rows) in this one."""
    import queue
    import threading

    from tqdm.auto import tqdm

    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(result=_fit_or_error(trainer)), daemon=True)
    thread.start()
    with tqdm(total=total_rows, desc=desc, unit="row") as bar:
        while thread.is_alive() or not progress.empty():
            try:
                bar.update(min(progress.get(timeout=0.5), max(0, total_rows - bar.n)))
            except queue.Empty:
                pass
    thread.join()
    if isinstance(done["result"], BaseException):
        raise done["result"]
    return done["result"]


def _fit_or_error(trainer):
    try:
        return trainer.fit()
    except BaseException as exc:  # re-raised on the caller's thread
        return exc
