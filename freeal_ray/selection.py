"""Choosing the next demonstration pool from the SLM's verdicts.

Per class: rows judged clean where the SLM agrees with the LLM, the top R% by lowest loss, then
k-medoids (FasterPAM) on SLM embeddings so the demos cover the class rather than crowd its centre.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def shortlist(losses: np.ndarray, top_ratio: float, sample_cap: int = 2000, seed: int = 0) -> np.ndarray:
    """Indices of the lowest-loss `top_ratio` of rows (at least one), a seeded sample of
    `sample_cap` of them where there are more: FasterPAM's distance matrix is quadratic in them."""
    n = len(losses)
    if n == 0:
        return np.zeros(0, dtype=int)
    keep = max(1, int(np.ceil(top_ratio * n)))
    candidates = np.argsort(losses, kind="stable")[:keep]
    if len(candidates) > sample_cap:
        candidates = np.sort(np.random.default_rng(seed).choice(candidates, sample_cap, replace=False))
    return candidates


def medoids(embeddings: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of k medoids of the rows under cosine distance (all rows where there are k or fewer)."""
    import kmedoids

    if len(embeddings) <= k:
        return np.arange(len(embeddings))
    x = embeddings.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    distances = np.clip(1.0 - x @ x.T, 0.0, None)
    result = kmedoids.fasterpam(distances, k, random_state=seed, n_cpu=1)
    return np.sort(np.asarray(result.medoids, dtype=int))


def select_class_demos(
    losses: np.ndarray,
    embeddings: np.ndarray,
    top_ratio: float,
    k: int,
    sample_cap: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Indices (into the inputs) of up to k medoids among the lowest-loss `top_ratio` of rows."""
    candidates = shortlist(losses, top_ratio, sample_cap, seed)
    return candidates[medoids(embeddings[candidates], k, seed)]


def select_demos(group: pd.DataFrame, top_ratio: float, k: int, sample_cap: int, seed: int,
                 columns: tuple[str, ...] = ("id", "text", "label")) -> pd.DataFrame:
    """One class's candidate rows (with `loss` and `embedding`) in, its demo rows (`columns` and
    origin) out."""
    picks = select_class_demos(group["loss"].to_numpy(), np.stack(group["embedding"].to_numpy()), top_ratio, k,
                               sample_cap, seed)
    chosen = group.iloc[picks][list(columns)].copy()
    chosen["id"] = chosen["id"].astype(str)
    chosen["origin"] = "corpus"
    return chosen.reset_index(drop=True)
