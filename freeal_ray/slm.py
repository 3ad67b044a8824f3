"""The small model for classification: a pretrained encoder, mean pooling, a linear head, and how
it scores a batch (checkpoint.py saves and loads it).

The head sits on the pooled sentence embedding so mixup can mix embeddings inside the same
forward call (DDP needs every parameter use to go through one forward).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import torch
from torch import nn

from freeal_ray.embedding import mean_pool
from freeal_ray.task import label_indices


class SLMClassifier(nn.Module):
    def __init__(self, encoder_path: str, n_labels: int, dropout: float = 0.1):
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(encoder_path)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.config.hidden_size, n_labels)

    def forward(self, input_ids, attention_mask, mix_index=None, mix_perm=None, mix_lam: float = 1.0):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        logits = self.head(self.dropout(pooled))
        if mix_index is None:
            return logits, pooled, None
        clean = pooled[mix_index]
        mixed = mix_lam * clean + (1.0 - mix_lam) * clean[mix_perm]
        return logits, pooled, self.head(self.dropout(mixed))


def tokenize(tokenizer, texts, max_length: int):
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def score_texts(checkpoint, batch: pd.DataFrame) -> pd.DataFrame:
    """Per row: the classifier's prediction, class probabilities, loss against the current label
    (NaN when the row has none) and its sentence embedding."""
    model, labels = checkpoint.model, checkpoint.classes
    with torch.inference_mode():
        ids, mask = tokenize(checkpoint.tokenizer, batch["text"], checkpoint.max_length)
        logits, pooled, _ = model(ids, mask)
    log_probs = torch.log_softmax(logits.float(), dim=-1).numpy()
    targets = label_indices(batch["label"] if "label" in batch else [None] * len(batch), labels)
    rows = np.arange(len(targets))
    loss = np.where(targets >= 0, -log_probs[rows, targets.clip(min=0)], np.nan)
    batch = batch.copy()
    batch["pred"] = [labels[i] for i in log_probs.argmax(1)]
    batch["probs"] = list(np.exp(log_probs).astype(np.float32))
    batch["loss"] = loss
    batch["embedding"] = list(torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32))
    return batch
