"""Incremental mode: which unannotated rows the LLM sees next. Plain arrays in, plain arrays out.

A corpus too large to annotate whole gets a fresh share of rows each round. Random picks use a
per-row draw hashed from the row's id, so a resumed or re-run job picks the same rows without
keeping any list of them; uncertainty picks take the rows the current SLM is least sure about.
"""

from __future__ import annotations

import hashlib

import numpy as np

STRATEGIES = ("random", "entropy", "margin")


def row_draws(ids, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per id, the same for the same id and seed on any machine."""
    out = np.empty(len(ids), dtype=np.float64)
    for i, row_id in enumerate(ids):
        digest = hashlib.blake2b(f"{seed}:{row_id}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def uncertainty(probs: np.ndarray, strategy: str) -> np.ndarray:
    """Higher means the SLM is less sure: entropy of its class probabilities, or one minus the
    margin between its two most likely classes."""
    p = np.asarray(probs, dtype=np.float64)
    if strategy == "entropy":
        return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
    if strategy == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    raise ValueError(f"unknown uncertainty strategy {strategy!r}; choose one of {', '.join(STRATEGIES[1:])}")


def subset_size(n_rows: int, fraction: float) -> int:
    """Rows per round for a corpus of `n_rows`: at least one."""
    return max(1, int(round(fraction * n_rows)))


def draw_cutoff(n: int, n_rows: int) -> float:
    """A draw below which at least `n` of `n_rows` uniform draws fall but for a 6-sigma fluke, so
    the `n` smallest draws can be found by sorting only the rows under it, not the whole corpus."""
    if n_rows <= 0:
        return 1.0
    return min(1.0, (n + 6.0 * n**0.5 + 10.0) / n_rows)
