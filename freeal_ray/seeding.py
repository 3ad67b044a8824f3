"""Round 0's demos from the LLM's own most confident zero-shot answers (`loop.round0_demos: confident`).

A chat-tuned annotator labels a random sample of corpus rows with no demo; per class, the answers it
was surest of are the candidates, and k-medoids on encoder embeddings spreads the demos over the
class, the same selection later rounds make from the SLM's clean rows. Real rows in the corpus's own
style, labelled about as well as the zero-shot prompt labels its easiest rows.
"""

from __future__ import annotations

import numpy as np

from freeal_ray.selection import select_class_demos


def confident_demos(labels, confidence, embeddings: np.ndarray, top_ratio: float, k: int, seed: int = 0) -> np.ndarray:
    """Indices of the demos among zero-shot answers: per class (rows with no label are skipped)
    up to `k` medoids among its `top_ratio` most confident answers."""
    labels = np.asarray(labels, dtype=object)
    confidence = np.nan_to_num(np.asarray(confidence, dtype=float), nan=0.0)
    picks = []
    for label in sorted({x for x in labels if x is not None}):
        rows = np.flatnonzero(labels == label)
        chosen = select_class_demos(-confidence[rows], embeddings[rows], top_ratio, k, seed=seed)
        picks.append(rows[chosen])
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=int)
