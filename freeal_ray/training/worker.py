"""The one training loop, run by every Ray Train worker, for either head (objectives.py).

Per epoch: warm-up epochs use plain cross-entropy; after them each batch is split with the
previous epoch's loss GMM into clean and noisy rows, and the objective's robust loss applies.
Only the GMM's five numbers cross between workers and epochs, never per-row state, so the data
can stream and reshuffle freely.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from freeal_ray.noise import LossGMM, fit_loss_gmm, ramp
from freeal_ray.training.objectives import OBJECTIVES
from freeal_ray.training.settings import TrainSettings, make_optimizer


def train_loop(config: dict) -> None:
    import torch

    import ray.train
    from ray.train.torch import get_device, prepare_model

    s = TrainSettings(**config["settings"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(s.seed)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, ctx.get_local_world_size())))
    objective = OBJECTIVES[config["objective"]](s, get_device(), rank)
    model = prepare_model(objective.build_model())
    shard = ray.train.get_dataset_shard("train")

    def end_epoch(metrics: dict, last: bool) -> None:
        if last:
            _report_final(metrics, model, objective, rank, config.get("checkpoint_dir"))
        else:
            ray.train.report(metrics)

    fit_epochs(model, objective, make_optimizer(model, s), s,
               epoch_batches=lambda epoch: _epoch_batches(shard, s, epoch),
               all_batches=lambda: shard.iter_batches(batch_size=s.batch_size, batch_format="numpy"),
               world=world, tick=lambda rows: _tick(config, rank, rows), end_epoch=end_epoch)


def fit_epochs(model, objective, optim, s: TrainSettings, epoch_batches, all_batches, world: int = 1,
               tick=None, end_epoch=None) -> dict:
    """The epochs themselves, on whatever device `objective` and `model` sit: `epoch_batches(epoch)`
    yields one epoch's batches (dicts of arrays), `all_batches()` every row once, unshuffled. Apart
    from Ray Train, so the same loop runs where Ray does not (a GPU check). Returns the last epoch's metrics."""
    import torch

    gmm: LossGMM | None = None
    metrics: dict = {}
    for epoch in range(s.epochs):
        w = ramp(epoch, s.warmup_epochs, s.ramp_epochs)
        robust = gmm is not None and epoch >= s.warmup_epochs
        losses, n_taught, n_labelled, total = [], 0, 0, 0.0
        model.train()
        for batch in epoch_batches(epoch):
            step = objective.step(model, batch, gmm, robust, w)
            losses.append(step.row_losses)
            n_taught += step.taught
            n_labelled += step.labelled
            optim.zero_grad()
            step.loss.backward()
            optim.step()
            total += float(step.loss.detach())
            if tick is not None:
                tick(step.rows * world)
        if objective.eval_pass_after_warmup and epoch == s.warmup_epochs - 1 < s.epochs - 1:
            losses = [_eval_losses(model, all_batches(), objective, torch)]  # the first robust epoch is next
        gmm = _fit_gathered(losses, world, s.seed) or gmm
        metrics = {"epoch": epoch, "train_loss": total, "clean_fraction": n_taught / max(n_labelled, 1), "robust": robust}
        if end_epoch is not None:
            end_epoch(metrics, epoch == s.epochs - 1)
    return metrics


def _report_final(metrics: dict, model, objective, rank: int, checkpoint_dir: str | None) -> None:
    """Report the last epoch with rank 0's checkpoint. Ray Train's workers upload a reported
    checkpoint, so a temporary folder does; its local mode keeps only the path, so `checkpoint_dir`."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            folder = checkpoint_dir or tmp
            objective.save((model.module if hasattr(model, "module") else model).cpu(), folder)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def _epoch_batches(shard, s: TrainSettings, epoch: int):
    """One epoch's batches in a fresh random order. The shuffle buffer holds the whole shard up to
    `shuffle_rows` rows, so a corpus sorted by class (or, from round 2, kept rows before refined
    ones) still trains on mixed batches; past that it mixes a window of that many rows. It runs in
    the training worker: a Ray Data shuffle would need CPUs the annotator and the trainer hold."""
    return shard.iter_batches(batch_size=s.batch_size, batch_format="numpy",
                              local_shuffle_buffer_size=max(s.batch_size, s.shuffle_rows), local_shuffle_seed=s.seed + epoch)


def _eval_losses(model, batches, objective, torch) -> np.ndarray:
    """Every labelled row's loss under the current weights in eval mode, in one pass over the
    rows. The first GMM is fitted on these rather than on the warm-up epoch's own losses, which
    mix dropout noise with a whole epoch of learning (early batches look noisy only because they
    came early) and sit on another scale than the eval-mode losses the GMM is then applied to."""
    model.eval()
    with torch.no_grad():
        parts = [objective.labelled_losses(model, b) for b in batches]
    model.train()
    return np.concatenate(parts) if parts else np.zeros(0)


def _fit_gathered(losses: list, world: int, seed: int) -> LossGMM | None:
    """The GMM over every worker's per-row losses; None when they cannot be split."""
    all_losses = _gather(np.concatenate(losses) if losses else np.zeros(0), world)
    if len(all_losses) < 2 or np.ptp(all_losses) == 0:
        return None
    return fit_loss_gmm(all_losses, seed=seed)


def _gather(values: np.ndarray, world: int) -> np.ndarray:
    if world == 1:
        return values
    import torch.distributed as dist

    parts = [None] * world
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)


def _tick(config: dict, rank: int, rows: int) -> None:
    """Rank 0 tells the driver's progress bar how many rows (all workers together) one step trained."""
    if rank == 0 and config.get("progress") is not None:
        config["progress"].put_nowait(rows)
