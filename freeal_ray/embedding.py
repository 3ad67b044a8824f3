"""Sentence embeddings from an encoder folder: mean-pooled, L2-normalised (cosine = dot product).

The same pooling is the SLM's sentence representation, so demos retrieved "in the SLM's embedding
space" use exactly what the SLM was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)


class Encoder:
    def __init__(self, path: str, max_length: int = 128, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        import inspect

        self._inputs = set(inspect.signature(self.model.forward).parameters)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                enc = {k: v for k, v in enc.items() if k in self._inputs}
                hidden = self.model(**enc).last_hidden_state
                pooled = torch.nn.functional.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1)
                chunks.append(pooled.float().numpy())
        dim = self.model.config.hidden_size
        return np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
