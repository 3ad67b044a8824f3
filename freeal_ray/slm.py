"""The small model for classification: the encoder with Hugging Face's own sequence-classification
head (AutoModelForSequenceClassification), and how it scores a batch (checkpoint.py saves and
loads it).

The head is the standard one (the first token, through the encoder family's pooler, then a linear
layer) so that the saved folder is a model any transformers pipeline loads as it is. The sentence
embedding that demo retrieval and selection use is the mean-pooled last layer, what sentence
encoders are trained to embed with. Mixup mixes the last layer's first-token states inside the
same forward call (DDP needs every parameter use to go through one forward).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import torch
from torch import nn

from freeal_ray.embedding import mean_pool
from freeal_ray.errors import ConfigError
from freeal_ray.task import label_indices, label_maps


class SLMClassifier(nn.Module):
    def __init__(self, encoder_path: str, classes):
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        self.model = AutoModelForSequenceClassification.from_pretrained(encoder_path, **label_maps(classes))
        if self._pooler() is None and not hasattr(self.model.classifier, "out_proj"):
            raise ConfigError(f"slm.model {encoder_path}: {type(self.model).__name__} has a classification head freeal_ray "
                              "cannot mix up (it knows the BERT family's pooler and the RoBERTa/MPNet family's head)")

    def forward(self, input_ids, attention_mask, mix_index=None, mix_perm=None, mix_lam: float = 1.0):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        pooled = mean_pool(hidden, attention_mask)
        if mix_index is None:
            return out.logits, pooled, None
        first = hidden[mix_index, :1]
        mixed = mix_lam * first + (1.0 - mix_lam) * first[mix_perm]
        return out.logits, pooled, self._head(mixed)

    def _pooler(self):
        return getattr(getattr(self.model, self.model.base_model_prefix), "pooler", None)

    def _head(self, first_token):
        """The model's own head on (rows, 1, hidden) first-token states."""
        m, pooler = self.model, self._pooler()
        if pooler is not None:  # BERT family: pooler, dropout, linear
            return m.classifier(m.dropout(pooler(first_token)))
        return m.classifier(first_token)  # RoBERTa / MPNet family: the head reads the first token itself

def tokenize(tokenizer, texts, max_length: int):
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def score_texts(checkpoint, batch: pd.DataFrame) -> pd.DataFrame:
    """Per row: the classifier's prediction, class probabilities, loss against the current label
    (NaN when the row has none) and its sentence embedding."""
    model, labels = checkpoint.model, checkpoint.classes
    device = next(model.parameters()).device
    with torch.inference_mode():
        ids, mask = tokenize(checkpoint.tokenizer, batch["text"], checkpoint.max_length)
        logits, pooled, _ = model(ids.to(device), mask.to(device))
    logits, pooled = logits.cpu(), pooled.cpu()
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
