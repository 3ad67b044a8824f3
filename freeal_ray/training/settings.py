"""What one SLM fit needs to know: plain data, so it pickles to the Ray Train workers."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class TrainSettings:
    encoder_path: str
    labels: tuple[str, ...]  # the head's classes: a task's labels, or the BIO tags per token
    max_length: int
    epochs: int
    warmup_epochs: int
    batch_size: int
    lr: float
    gmm_threshold: float
    mixup_alpha: float
    mixup_weight: float
    consistency_weight: float
    ramp_epochs: int
    word_dropout: float
    seed: int
    noisy_rows: str = "refine"
    sharpen_temperature: float = 0.5
    head_lr: float = 0.0  # 0: the same as lr
    label_floor: float = 0.0
    shuffle_rows: int = 100_000  # rows per worker shuffled together each epoch (memory: text and label only)


def with_min_steps(s: TrainSettings, rows: int, workers: int, min_steps: int) -> TrainSettings:
    """`s` with enough epochs that a fit on `rows` rows takes at least `min_steps` optimizer steps;
    warm-up and ramp-up keep their share of the epochs, so the GMM still starts mid-way."""
    per_epoch = max(1, math.ceil(rows / (s.batch_size * max(1, workers))))
    if min_steps <= 0 or per_epoch * s.epochs >= min_steps:
        return s
    epochs = math.ceil(min_steps / per_epoch)
    scale = epochs / max(1, s.epochs)
    return replace(s, epochs=epochs, warmup_epochs=round(s.warmup_epochs * scale), ramp_epochs=round(s.ramp_epochs * scale))


def make_optimizer(model, s: TrainSettings):
    """AdamW; the output head (Hugging Face names it `classifier`), which starts from random
    weights, may learn at its own rate."""
    import torch

    head = [p for n, p in model.named_parameters() if "classifier" in n.split(".")]
    body = [p for n, p in model.named_parameters() if "classifier" not in n.split(".")]
    groups = [{"params": body}, {"params": head, "lr": s.head_lr or s.lr}]
    return torch.optim.AdamW(groups, lr=s.lr, weight_decay=0.01)
