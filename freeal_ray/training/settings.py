"""What one SLM fit needs to know: plain data, so it pickles to the Ray Train workers."""

from __future__ import annotations

from dataclasses import dataclass


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


def make_optimizer(model, s: TrainSettings):
    """AdamW; the output head (Hugging Face names it `classifier`), which starts from random
    weights, may learn at its own rate."""
    import torch

    head = [p for n, p in model.named_parameters() if "classifier" in n.split(".")]
    body = [p for n, p in model.named_parameters() if "classifier" not in n.split(".")]
    groups = [{"params": body}, {"params": head, "lr": s.head_lr or s.lr}]
    return torch.optim.AdamW(groups, lr=s.lr, weight_decay=0.01)
