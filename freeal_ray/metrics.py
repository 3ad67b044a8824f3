"""Label quality against a gold column, counted batch by batch so the driver holds a KxK matrix."""

from __future__ import annotations

import numpy as np
import ray


def confusion(ds: ray.data.Dataset, column: str, labels, gold: str = "gold") -> tuple[np.ndarray, int]:
    """(confusion matrix gold x predicted, rows with no prediction). Rows with unknown gold are skipped."""
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    abstained = 0
    for batch in ds.select_columns([gold, column]).iter_batches(batch_format="pandas", batch_size=4096):
        m, a = confusion_of(batch[gold], batch[column], labels)
        matrix += m
        abstained += a
    return matrix, abstained


def confusion_of(gold, pred, labels) -> tuple[np.ndarray, int]:
    """The same counts from two plain sequences (None or an unknown label in `pred` abstains)."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    abstained = 0
    for g, p in zip(gold, pred):
        if g not in index:
            continue
        if p not in index:
            abstained += 1
        else:
            matrix[index[g], index[p]] += 1
    return matrix, abstained


def scores(matrix: np.ndarray, abstained: int) -> dict:
    """Accuracy (abstentions count as wrong), coverage, and macro-F1."""
    total = int(matrix.sum()) + abstained
    correct = int(np.trace(matrix))
    tp = np.diag(matrix).astype(float)
    precision = tp / np.maximum(matrix.sum(0), 1)
    recall = tp / np.maximum(matrix.sum(1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return {
        "acc": correct / total if total else None,
        "coverage": (total - abstained) / total if total else None,
        "macro_f1": float(f1.mean()) if total else None,
        "n": total,
    }


def label_quality(ds: ray.data.Dataset, column: str, labels, gold: str = "gold") -> dict:
    return scores(*confusion(ds, column, labels, gold))


def entity_quality(ds: ray.data.Dataset, column: str, gold: str = "gold_tags") -> dict:
    """Entity-level micro precision, recall and F1 (exact span and type) of `column` against the
    gold tags, counted batch by batch; sentences with no gold tags are skipped."""
    from freeal_ray.ner import entity_counts

    tp = n_gold = n_pred = 0
    for batch in ds.select_columns([gold, column]).iter_batches(batch_format="pandas", batch_size=4096):
        for g, p in zip(batch[gold], batch[column]):
            if g is None:
                continue
            counts = entity_counts(list(g), [] if p is None else list(p))
            tp, n_gold, n_pred = tp + counts[0], n_gold + counts[1], n_pred + counts[2]
    return entity_scores_of(tp, n_gold, n_pred)


def entity_scores_of(tp: int, n_gold: int, n_pred: int) -> dict:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "gold_entities": n_gold, "predicted_entities": n_pred}
