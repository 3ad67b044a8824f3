"""Nearest-demo retrieval. One abstract base; FAISS is the implementation.

Exact inner-product search for small pools; an IVF index once the pool is large enough that exact
search would dominate (demo pools are usually small, corpora are not).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

IVF_THRESHOLD = 20_000


class VectorIndex(ABC):
    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Indices of the k nearest stored vectors per query, nearest first (-1 pads)."""


class FaissIndex(VectorIndex):
    def __init__(self, vectors: np.ndarray, ivf_threshold: int = IVF_THRESHOLD, seed: int = 0):
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        if n >= ivf_threshold:
            nlist = int(4 * np.sqrt(n))
            quantizer = faiss.IndexFlatIP(dim)
            self.index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.seed = seed
            self.index.train(vectors)
            self.index.nprobe = max(1, nlist // 16)
        else:
            self.index = faiss.IndexFlatIP(dim)
        self.index.add(vectors)
        self.size = n

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        k = min(k, self.size)
        _, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return idx


def nearest_demos(index: VectorIndex, queries: np.ndarray, k: int) -> list[list[int]]:
    """Per query, the demo indices to show, farthest first so the nearest sits next to the query."""
    return [[int(i) for i in row[::-1] if i >= 0] for row in index.search(queries, k)]
