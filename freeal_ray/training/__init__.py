"""Robust self-training of the SLM on the LLM's noisy labels, in a Ray Train TorchTrainer: one
training loop (worker.py) for both heads, whose differences live in objectives.py."""

from freeal_ray.training.driver import train_slm
from freeal_ray.training.settings import TrainSettings

__all__ = ["TrainSettings", "train_slm"]
