"""One save, one load and one scorer for the SLM, whatever its head.

A checkpoint folder is a Hugging Face model folder (AutoModelForSequenceClassification or
AutoModelForTokenClassification, class names in id2label, with its tokenizer), so a transformers
pipeline loads it as it is, plus `slm.json` (which head, its classes, the max length in tokens).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from freeal_ray.errors import FreeALError
from freeal_ray.slm import SLMClassifier, score_texts
from freeal_ray.tagger import TokenTagger, score_sentences

# head kind -> (model class, batch scorer). "tagger" is what slm.json has always called the NER head.
HEADS = {"classifier": (SLMClassifier, score_texts), "tagger": (TokenTagger, score_sentences)}


@dataclass
class Checkpoint:
    model: torch.nn.Module
    tokenizer: object
    classes: list[str]  # labels, or BIO tags
    max_length: int
    head: str


def save_checkpoint(model, tokenizer, classes, max_length: int, folder: str | Path, head: str = "classifier") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "slm.json").write_text(json.dumps({"kind": head, "labels": list(classes), "max_length": max_length}))
    return folder


def load_checkpoint(folder: str | Path, device: str = "cpu") -> Checkpoint:
    """The model in eval mode on `device` ("auto": a GPU when this process has one), with what
    scoring needs, from a folder save_checkpoint wrote."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if (folder / "head.pt").exists():
        raise FreeALError(f"{folder} holds an SLM saved by an earlier freeal_ray (encoder/ and head.pt): delete that "
                          "folder and re-run, and the round trains it again in today's Hugging Face layout")
    meta = json.loads((folder / "slm.json").read_text())
    head = meta.get("kind", "classifier")
    model = HEADS[head][0](str(folder), meta["labels"]).to(resolve_device(device))
    return Checkpoint(model.eval(), AutoTokenizer.from_pretrained(folder), meta["labels"], meta["max_length"], head)


def resolve_device(device: str) -> str:
    """"auto": the GPU Ray gave this process (or the only one it sees), else the CPU."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def scorer_compute(use_gpu: bool) -> dict:
    """map_batches arguments for a pool of SLM actors: one per GPU the cluster has (Ray Data
    scales the pool up from one as GPUs come free), else one CPU actor whose torch threads use
    the node's cores."""
    import ray

    if use_gpu:
        gpus = max(1, int(ray.cluster_resources().get("GPU", 0)))
        return {"compute": ray.data.ActorPoolStrategy(min_size=1, max_size=gpus), "num_gpus": 1, "num_cpus": 1}
    return {"compute": ray.data.ActorPoolStrategy(size=1), "num_cpus": 1}


def actor_threads(device: str) -> None:
    """Ray starts an actor that asked for one CPU with OMP_NUM_THREADS=1, so torch would score on
    one core of the node; the SLM's actor is the only work of its stage (one CPU actor a node), so
    it takes every core this process may use."""
    if resolve_device(device) == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def score_by_length(checkpoint: Checkpoint, frame: pd.DataFrame, batch_size: int = 64) -> pd.DataFrame:
    """The head's scores for `frame`'s rows (text, or tokens for the tagger), in forward passes of
    `batch_size` rows of similar length: a pass is padded to its longest row, so sorting first
    saves the padding (MR's sentences run from 2 to 60 tokens). Rows come back in their order."""
    column = "tokens" if checkpoint.head == "tagger" else "text"
    score = HEADS[checkpoint.head][1]
    order = np.argsort([len(v) for v in frame[column]], kind="stable")
    by_length = frame.iloc[order]
    parts = [score(checkpoint, by_length.iloc[i : i + batch_size]) for i in range(0, len(frame), batch_size)]
    return pd.concat(parts).iloc[np.argsort(order)].reset_index(drop=True) if parts else frame


class SLMScorer:
    """Ray Data actor: per row, the SLM's prediction, its loss against the row's current label
    (NaN where the row has none) and its sentence embedding; the head decides the columns
    (classifier: pred, probs; tagger: pred_tags)."""

    def __init__(self, folder: str, device: str = "cpu", batch_size: int = 64):
        actor_threads(device)
        self.checkpoint = load_checkpoint(folder, device)
        self.batch_size = batch_size

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return score_by_length(self.checkpoint, batch, self.batch_size)
