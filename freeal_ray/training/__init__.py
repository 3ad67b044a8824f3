"""Robust self-training of the SLM on the LLM's noisy labels, in a Ray Train TorchTrainer: one
training loop (worker.py) for both heads, whose differences live in objectives.py."""

from freeal_ray.training.settings import TrainSettings

__all__ = ["TrainSettings", "train_slm"]


def __getattr__(name):
    # Lazy, so the loop and the losses import where Ray is not installed (a GPU check of them).
    if name == "train_slm":
        from freeal_ray.training.driver import train_slm

        return train_slm
    raise AttributeError(name)
