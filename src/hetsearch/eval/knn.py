"""Exact k-nearest-neighbour search by inner product, behind a swappable interface.

A backend is an object built on the gallery embeddings that answers ``search(queries, k)``;
anything that takes the gallery matrix and returns such an object is a ``KnnFactory`` (the
backend classes themselves are factories: ``FaissExactIP(gallery)``). Backends compute raw inner
products: hetsearch embeddings are L2-normalised (see ``docs/architecture.md``), so the inner
product is the cosine similarity; normalise first with ``l2_normalize`` if yours are not.

Tie rule (``hetsearch.eval.ranking``, shared by every ranking in hetsearch): neighbours are
ranked by descending score, and equal scores by ascending gallery index. FAISS lists equal scores
in descending index order and picks arbitrary items among those tied at the k-th place, so
``FaissExactIP`` re-sorts each result row and re-searches (deeper) the rare rows whose k-th score
ties with the next one; ``TorchExactIP`` ranks with ``ranking.top_k``.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch

from hetsearch.eval._inputs import as_embeddings, check_same_dim, l2_normalize
from hetsearch.eval.ranking import sort_ties_by_index, top_k

__all__ = [
    "FaissExactIP",
    "KnnBackend",
    "KnnFactory",
    "TorchExactIP",
    "l2_normalize",
    "sort_ties_by_index",
]


@runtime_checkable
class KnnBackend(Protocol):
    """A searchable index over a fixed set of gallery embeddings."""

    @property
    def dim(self) -> int:
        """Embedding dimension the backend accepts."""
        ...

    def __len__(self) -> int:
        """Number of gallery items."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, indices)``, both ``(num_queries, k)``: float32 inner products and
        int64 gallery indices, best first, ties by ascending gallery index."""
        ...


KnnFactory = Callable[[np.ndarray], KnnBackend]
"""Builds a backend from a gallery matrix ``(N, D)``; e.g. ``FaissExactIP`` or ``TorchExactIP``."""


def _check_k(k: int, gallery_size: int) -> None:
    if not 1 <= k <= gallery_size:
        raise ValueError(f"k must be between 1 and the gallery size {gallery_size}, got {k}")


class FaissExactIP:
    """Exact inner-product search with ``faiss.IndexFlatIP`` (the default backend).

    Queries are searched ``query_chunk_size`` at a time, so memory stays bounded by the result
    arrays and FAISS's own blocked scoring (no queries x gallery matrix is materialised).
    """

    def __init__(self, gallery: np.ndarray, *, query_chunk_size: int = 4096) -> None:
        import faiss  # imported lazily: importing hetsearch.eval should not require it

        self._gallery = as_embeddings(gallery, "gallery embeddings")
        self._index = faiss.IndexFlatIP(self._gallery.shape[1])
        self._index.add(self._gallery)
        self.query_chunk_size = query_chunk_size

    @property
    def dim(self) -> int:
        return self._gallery.shape[1]

    def __len__(self) -> int:
        return self._gallery.shape[0]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_embeddings(queries, "query embeddings")
        check_same_dim(queries.shape[1], self.dim)
        _check_k(k, len(self))
        scores = np.empty((len(queries), k), dtype=np.float32)
        indices = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), self.query_chunk_size):
            stop = start + self.query_chunk_size
            scores[start:stop], indices[start:stop] = self._search_chunk(queries[start:stop], k)
        return scores, indices

    def _search_ranked(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        scores, indices = self._index.search(queries, depth)
        return sort_ties_by_index(scores, indices.astype(np.int64, copy=False))

    def _search_chunk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k under the tie rule. FAISS picks arbitrary items among those tied at the k-th
        place, so rows whose list may be cut inside a run of equal scores are searched again,
        deeper, until the run ends inside the list (or the whole gallery is listed)."""
        depth = min(k + 1, len(self))  # one extra neighbour reveals a tie across the k-th place
        scores, indices = self._search_ranked(queries, depth)
        unresolved = np.flatnonzero(scores[:, depth - 1] == scores[:, k - 1])
        while depth > k and len(unresolved):
            depth = min(2 * depth, len(self))
            row_scores, row_indices = self._search_ranked(queries[unresolved], depth)
            scores[unresolved, :k] = row_scores[:, :k]
            indices[unresolved, :k] = row_indices[:, :k]
            if depth == len(self):
                break
            unresolved = unresolved[row_scores[:, depth - 1] == row_scores[:, k - 1]]
        return scores[:, :k], indices[:, :k]


class TorchExactIP:
    """Exact inner-product search with chunked ``torch`` matmul + top-k.

    Small and dependency-free; mainly a cross-check for ``FaissExactIP`` and the metrics. Ties at
    the k-th place are resolved exactly by the tie rule (lowest gallery indices win), which costs
    one pass over each ``query_chunk_size x N`` score block.
    """

    def __init__(self, gallery: np.ndarray, *, query_chunk_size: int = 256) -> None:
        self._gallery = torch.from_numpy(as_embeddings(gallery, "gallery embeddings"))
        self.query_chunk_size = query_chunk_size

    @property
    def dim(self) -> int:
        return self._gallery.shape[1]

    def __len__(self) -> int:
        return self._gallery.shape[0]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries_t = torch.from_numpy(as_embeddings(queries, "query embeddings"))
        check_same_dim(queries_t.shape[1], self.dim)
        _check_k(k, len(self))
        scores = np.empty((len(queries_t), k), dtype=np.float32)
        indices = np.empty((len(queries_t), k), dtype=np.int64)
        with torch.inference_mode():
            for start in range(0, len(queries_t), self.query_chunk_size):
                stop = start + self.query_chunk_size
                chunk_scores, chunk_indices = top_k(queries_t[start:stop] @ self._gallery.T, k)
                scores[start:stop] = chunk_scores.numpy()
                indices[start:stop] = chunk_indices.numpy()
        return scores, indices
