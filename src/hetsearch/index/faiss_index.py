"""FAISS indexes over L2-normalised embeddings, searched by inner product (= cosine).

Three kinds, all addressed by the item ids of the metadata store (``add_with_ids``):

* ``flat``: exact search (``IndexIDMap2(IndexFlatIP)``), the default.
* ``ivf``: inverted lists (``IndexIVFFlat``), params ``nlist`` (lists; default ~4*sqrt(N), at most
  N/39) and
  ``nprobe`` (lists visited per query; more = better recall, slower).
* ``hnsw``: graph search (``IndexIDMap2(IndexHNSWFlat)``), params ``M`` (links per node),
  ``efConstruction`` and ``efSearch`` (candidate list size at build/query time). FAISS cannot
  remove from an HNSW graph, so removals rebuild it from the stored vectors.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from hetsearch.errors import ConfigError

INDEX_TYPES = ("flat", "ivf", "hnsw")
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {"nlist": None, "nprobe": 16},
    "hnsw": {"M": 32, "efConstruction": 80, "efSearch": 64},
}
SEARCH_PARAMS = {"ivf": ("nprobe",), "hnsw": ("efSearch",)}


def resolve_params(index_type: str, params: dict[str, Any] | None, num_items: int) -> dict[str, Any]:
    """Defaults filled in, unknown keys and bad values rejected with a ConfigError."""
    if index_type not in INDEX_TYPES:
        raise ConfigError(f"index type: got {index_type!r}, expected one of {', '.join(INDEX_TYPES)}")
    merged = dict(DEFAULT_PARAMS[index_type])
    for key, value in (params or {}).items():
        if key not in merged:
            known = ", ".join(DEFAULT_PARAMS[index_type]) or "none"
            raise ConfigError(f"index parameter {key!r} does not apply to a {index_type} index (known: {known})")
        if value is not None:
            merged[key] = value
    if index_type == "ivf" and merged["nlist"] is None:
        # ~4 sqrt(N) lists, but at least 39 training points per list (FAISS's k-means minimum)
        merged["nlist"] = max(1, min(int(4 * math.sqrt(max(num_items, 1))), num_items // 39, 65536))
    for key, value in merged.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"index parameter {key}: got {value!r}, expected a positive integer")
    return merged


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"expected float32 vectors of shape (N, {dim}), got {vectors.shape}")
    return vectors


def build_faiss_index(index_type: str, params: dict[str, Any], vectors: np.ndarray, ids: np.ndarray,
                      seed: int = 0) -> faiss.Index:
    """A ready-to-search index holding ``vectors`` under ``ids`` (params as from `resolve_params`)."""
    dim = int(vectors.shape[1])
    vectors = _as_matrix(vectors, dim)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if index_type == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif index_type == "ivf":
        nlist = min(params["nlist"], max(1, len(vectors)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.verbose = False
        train = vectors
        max_train = 256 * nlist
        if len(train) > max_train:  # what FAISS would sample anyway, but seeded and without its warning
            train = vectors[np.random.default_rng(seed).choice(len(vectors), max_train, replace=False)]
        if len(train) == 0:
            raise ConfigError("an ivf index needs at least one vector to train its coarse quantizer")
        index.train(train)
    else:
        hnsw = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = params["efConstruction"]
        index = faiss.IndexIDMap2(hnsw)
    if len(vectors):
        index.add_with_ids(vectors, ids)
    set_search_params(index, index_type, params)
    return index


def set_search_params(index: faiss.Index, index_type: str, params: dict[str, Any]) -> None:
    """Apply the query-time knobs (nprobe / efSearch) to a built or loaded index."""
    if index_type == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(int(params["nprobe"]), ivf.nlist)
    elif index_type == "hnsw":
        inner = faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap2) else index)
        inner.hnsw.efSearch = int(params["efSearch"])


def set_omp_threads(threads: int | None) -> None:
    """FAISS's OpenMP thread count for the calling thread (OpenMP settings are per thread)."""
    if threads:
        faiss.omp_set_num_threads(int(threads))


def supports_remove(index_type: str) -> bool:
    return index_type != "hnsw"


def remove_ids(index: faiss.Index, ids: np.ndarray) -> int:
    return int(index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))


def write_index(index: faiss.Index, path) -> None:
    faiss.write_index(index, str(path))


def read_index(path) -> faiss.Index:
    return faiss.read_index(str(path))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of shape (N, k); missing results (k > items) have id -1."""
    queries = _as_matrix(queries, index.d)
    return index.search(queries, k)
