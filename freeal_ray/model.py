"""The trained small model outside the loop: `load_model(path).predict(texts)`.

`path` is a run's output folder or its `slm/` folder. Classification returns a label, its
probability and every class's probability per text; NER takes raw strings (or token lists) and
returns BIO tags per word and entity spans with character offsets into the raw text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from freeal_ray import ner
from freeal_ray.checkpoint import load_checkpoint, score_by_length
from freeal_ray.errors import FreeALError


def slm_folder(path: str | Path) -> Path:
    """The SLM checkpoint folder behind `path`: the folder itself, or a run folder's `slm/`."""
    path = Path(path).expanduser()
    for folder in (path, path / "slm"):
        if (folder / "slm.json").exists():
            return folder
    raise FreeALError(f"{path} holds no trained SLM (no slm.json there or in its slm/ folder): give a run's "
                      "output folder after its first round, or the slm/ folder inside it")


def load_model(path: str | Path, device: str = "auto") -> "TrainedSLM":
    """The SLM a run trained, in eval mode on `device` ("auto": a GPU when there is one, else the CPU)."""
    return TrainedSLM(slm_folder(path), device)


class TrainedSLM:
    def __init__(self, folder: Path, device: str = "auto"):
        self.folder = folder
        self.checkpoint = load_checkpoint(folder, device)

    @property
    def is_tagger(self) -> bool:
        return self.checkpoint.head == "tagger"

    @property
    def classes(self) -> list[str]:
        """The labels (classification) or BIO tags (NER) the head predicts."""
        return list(self.checkpoint.classes)

    def score(self, texts: Sequence, labels: Sequence | None = None, batch_size: int = 64) -> pd.DataFrame:
        """What the loop's scorer gives per row: pred (or pred_tags), probs, loss against `labels`
        (NaN where a row has none) and the sentence embedding. NER rows are token lists."""
        column, label_column = ("tokens", "tags") if self.is_tagger else ("text", "label")
        frame = pd.DataFrame({column: list(texts)})
        frame[label_column] = list(labels) if labels is not None else None
        return score_by_length(self.checkpoint, frame, batch_size)

    def predict(self, texts: Sequence, batch_size: int = 64) -> list[dict]:
        """Per text, a dict: classification {label, confidence, probs: {label: p}}; NER {tokens,
        tags, entities: [{type, text, start, end}]} (character offsets for raw strings)."""
        return predict_tags(self, texts, batch_size) if self.is_tagger else predict_labels(self, texts, batch_size)


def predict_labels(model: TrainedSLM, texts: Sequence[str], batch_size: int) -> list[dict]:
    scored = model.score([str(t) for t in texts], batch_size=batch_size)
    out = []
    for probs in scored["probs"] if len(scored) else []:
        best = int(np.argmax(probs))
        out.append({"label": model.classes[best], "confidence": float(probs[best]),
                    "probs": {c: float(p) for c, p in zip(model.classes, probs)}})
    return out


def predict_tags(model: TrainedSLM, texts: Sequence, batch_size: int) -> list[dict]:
    """Raw strings are split into words with their character offsets (the same split ingest uses),
    so every entity maps back to the characters it came from; token lists keep their tokens."""
    words, offsets = [], []
    for text in texts:
        if isinstance(text, str):
            tokens, spans = ner.tokenize(text)
        else:
            tokens, spans = [str(t) for t in text], None
        words.append(tokens)
        offsets.append(spans)
    scored = model.score(words, batch_size=batch_size)
    tagged = scored["pred_tags"] if len(scored) else []
    return [{"tokens": tokens, "tags": list(tags), "entities": entity_spans(text, tokens, spans, tags)}
            for text, tokens, spans, tags in zip(texts, words, offsets, tagged)]


def entity_spans(text, tokens: Sequence[str], offsets, tags: Sequence[str]) -> list[dict]:
    """Each entity in `tags` with its type, text and token range; with `offsets` (raw text) also
    its character `start` and `end` in `text`, and its text is that slice, spaces and all."""
    found = []
    for start, end, etype in ner.entities(tags):
        entity = {"type": etype, "text": " ".join(tokens[start:end]), "token_start": start, "token_end": end}
        if offsets is not None:
            entity.update(start=offsets[start][0], end=offsets[end - 1][1])
            entity["text"] = text[entity["start"] : entity["end"]]
        found.append(entity)
    return found
