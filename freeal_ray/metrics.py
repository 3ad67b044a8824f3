"""Label quality against a gold column. Each batch is counted on a worker and only its counts
reach the driver, so the driver holds a KxK matrix however large the corpus."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the scorers on plain sequences import where Ray is not installed
    import ray


def confusion(ds: ray.data.Dataset, column: str, labels, gold: str = "gold") -> tuple[np.ndarray, int]:
    """(confusion matrix gold x predicted, rows with no prediction). Rows with unknown gold are skipped."""
    k = len(labels)
    counts = _sum_counts(ds, [gold, column], _batch_confusion, dict(gold=gold, column=column, labels=tuple(labels)), k * k + 1)
    return counts[:-1].reshape(k, k), int(counts[-1])


def _batch_confusion(batch, gold: str, column: str, labels) -> dict:
    matrix, abstained = confusion_of(batch[gold], batch[column], labels)
    return {"counts": [np.append(matrix.ravel(), abstained)]}


def _sum_counts(ds, columns: list[str], count_batch, kwargs: dict, width: int) -> np.ndarray:
    """Sum of per-batch count vectors computed on the workers: pulling the rows themselves
    through the driver costs it memory that grows with the corpus (measured: +60 MB at 1M rows).
    A tables.LocalTable (a table a stage just wrote) is counted batch by batch on the driver
    instead, sparing a Ray Data pass for a few columns."""
    total = np.zeros(width, dtype=np.int64)
    if hasattr(ds, "batches"):
        for batch in ds.batches(columns):
            total += np.asarray(count_batch(batch, **kwargs)["counts"][0], dtype=np.int64).reshape(-1)
        return total
    counted = ds.select_columns(columns).map_batches(count_batch, fn_kwargs=kwargs, batch_format="pandas", batch_size=4096)
    for batch in counted.iter_batches(batch_format="numpy", batch_size=None):
        total += np.asarray(batch["counts"], dtype=np.int64).reshape(-1, width).sum(0)
    return total


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


def split_quality(ds: ray.data.Dataset, gold: str = "gold") -> dict:
    """How well the SLM's noisy split finds the LLM's wrong labels: of the labelled rows it called
    noisy, the share whose label is wrong (precision), and of the wrong labels, the share it called
    noisy (recall). Abstentions are left out: they are noisy by construction."""
    noisy_wrong, noisy, wrong = _sum_counts(ds, [gold, "label", "clean"], _batch_split_counts, dict(gold=gold), 3)
    return {"noisy_precision": float(noisy_wrong / noisy) if noisy else None,
            "noisy_recall": float(noisy_wrong / wrong) if wrong else None}


def _batch_split_counts(batch, gold: str) -> dict:
    g, label = as_strings(batch[gold]), as_strings(batch["label"])
    known = (g != None) & (label != None)  # noqa: E711 -- elementwise on object arrays
    wrong = known & (label != g)
    noisy = known & ~np.array([bool(x) for x in batch["clean"]], dtype=bool)
    return {"counts": [np.array([(noisy & wrong).sum(), noisy.sum(), wrong.sum()])]}


def as_strings(column) -> np.ndarray:
    """A column as an object array of str or None, whatever Arrow or pandas type it came as."""
    return np.array([x if isinstance(x, str) else (None if pd.isna(x) else str(x)) for x in column], dtype=object)


def label_moves(ds: ray.data.Dataset, gold: str = "gold") -> dict:
    """What a refinery did to the labels: wrong ones it made right (fixed), right ones it made
    wrong (broken)."""
    fixed, broken = _sum_counts(ds, [gold, "label", "prev_label"], _batch_moves, dict(gold=gold), 2)
    return {"fixed": int(fixed), "broken": int(broken)}


def _batch_moves(batch, gold: str) -> dict:
    g = as_strings(batch[gold])
    known = g != None  # noqa: E711
    was_right = known & (as_strings(batch["prev_label"]) == g)
    is_right = known & (as_strings(batch["label"]) == g)
    return {"counts": [np.array([(~was_right & is_right).sum(), (was_right & ~is_right).sum()])]}


def entity_quality(ds: ray.data.Dataset, column: str, gold: str = "gold_tags") -> dict:
    """Entity-level micro precision, recall and F1 (exact span and type) of `column` against the
    gold tags, counted batch by batch; sentences with no gold tags are skipped."""
    tp, n_gold, n_pred = _sum_counts(ds, [gold, column], _batch_entity_counts, dict(gold=gold, column=column), 3)
    return entity_scores_of(int(tp), int(n_gold), int(n_pred))


def _batch_entity_counts(batch, gold: str, column: str) -> dict:
    from freeal_ray.ner import entity_counts

    total = np.zeros(3, dtype=np.int64)
    for g, p in zip(batch[gold], batch[column]):
        if g is not None:
            total += np.asarray(entity_counts(list(g), [] if p is None else list(p)))
    return {"counts": [total]}


def entity_scores(gold, pred) -> dict:
    """Micro precision, recall and F1 over exact-match entities (span and type), seqeval-style,
    from two plain sequences of BIO tag lists."""
    from freeal_ray.ner import entity_counts

    totals = np.zeros(3, dtype=np.int64)
    for g, p in zip(gold, pred):
        totals += np.asarray(entity_counts(g, p))
    return entity_scores_of(*(int(t) for t in totals))


def entity_scores_of(tp: int, n_gold: int, n_pred: int) -> dict:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "gold_entities": n_gold, "predicted_entities": n_pred}
