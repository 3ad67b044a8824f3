"""One save, one load and one scorer for the SLM, whatever its head.

A checkpoint folder holds `encoder/` (a Hugging Face model folder with its tokenizer), `head.pt`
(the linear head's weights) and `slm.json` (which head, its classes, the max length in tokens).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

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
    (folder / "encoder").mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "encoder")
    torch.save(model.head.state_dict(), folder / "head.pt")
    (folder / "slm.json").write_text(json.dumps({"kind": head, "labels": list(classes), "max_length": max_length}))
    return folder


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """The model in eval mode, with what scoring needs, from a folder save_checkpoint wrote."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    meta = json.loads((folder / "slm.json").read_text())
    head = meta.get("kind", "classifier")
    model = HEADS[head][0](str(folder / "encoder"), len(meta["labels"]))
    model.head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
    return Checkpoint(model.eval(), AutoTokenizer.from_pretrained(folder / "encoder"), meta["labels"], meta["max_length"], head)


class SLMScorer:
    """Ray Data actor: per row, the SLM's prediction, its loss against the row's current label
    (NaN where the row has none) and its sentence embedding; the head decides the columns
    (classifier: pred, probs; tagger: pred_tags)."""

    def __init__(self, folder: str):
        self.checkpoint = load_checkpoint(folder)
        self.score = HEADS[self.checkpoint.head][1]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.score(self.checkpoint, batch)
