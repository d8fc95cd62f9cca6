"""Retrieval accuracy of query embeddings against gallery embeddings.

``retrieval_metrics`` ranks the whole gallery for every query and reports, as fractions in [0, 1]:

- ``recall_at_{k}``: fraction of queries with at least one relevant item in the top k
  (the metric-learning "Recall@k"; ``recall_at_1`` equals precision@1 / top-1 accuracy);
- ``precision_at_{k}``: mean fraction of relevant items among the top k (``k`` is clipped to the
  gallery size);
- ``map``: mean average precision over the *full* ranking,
  ``AP = (1/R) * sum over relevant items of precision at that item's rank``;
- ``map_at_r``: MAP@R (Musgrave et al., "A Metric Learning Reality Check", 2020),
  ``(1/R) * sum_{i<=R} P(i) * rel(i)``;

where a gallery item is *relevant* to a query when it has the query's label and R is the number
of relevant gallery items. Also reported: ``num_queries``, ``num_gallery`` and
``num_queries_without_relevant`` (queries whose label has no relevant gallery item; they are left
out of every average above, as pytorch-metric-learning does).

Tie rule (``hetsearch.eval.ranking``, shared by every ranking in hetsearch): the gallery is ranked
by descending similarity, and items with exactly equal similarity by ascending gallery index.

``exclude_self=True`` is the homogeneous "rest of the split" protocol: query i and gallery i are
the same item, so gallery i is removed from query i's ranking (and from its relevant set).

How the exact full ranking stays fast: similarities are computed a chunk of queries at a time
(never queries x gallery at once); each row is ranked by ``ranking.ranked_columns`` (a two-pass
LSD radix sort on the 32-bit order-preserving key of the float32 scores); all metrics then follow
from the ranks of the relevant items. Row blocks are processed on ``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hetsearch.errors import DataError
from hetsearch.eval._inputs import compact_labels, l2_normalize, validated_pair
from hetsearch.eval.knn import KnnBackend, KnnFactory
from hetsearch.eval.ranking import ranked_columns

__all__ = ["retrieval_metrics"]

# Working-set sizes (elements of a queries x gallery score block).
_SCORE_CHUNK_ELEMENTS = 1 << 24  # ~64 MB of float32 scores per matmul chunk
_MAX_CHUNK_QUERIES = 256
_RANK_BLOCK_ELEMENTS = 1 << 21  # rows ranked together by one worker (~2M scores, cache friendly)
_MAX_BLOCK_QUERIES = 32
_KNN_CHUNK_QUERIES = 1024


@dataclass
class _PerQueryStats:
    """Per-query results; ranks are 0-based positions in the query's ranking."""

    num_relevant: np.ndarray  # int64 (nq,)
    average_precision: np.ndarray  # float64 (nq,)
    average_precision_at_r: np.ndarray  # float64 (nq,)
    first_relevant_rank: np.ndarray  # int64 (nq,), -1 when none
    hits_in_top_k: dict[int, np.ndarray]  # k -> int64 (nq,)

    @classmethod
    def empty(cls, num_queries: int, ks: Sequence[int]) -> "_PerQueryStats":
        return cls(
            num_relevant=np.zeros(num_queries, np.int64),
            average_precision=np.zeros(num_queries, np.float64),
            average_precision_at_r=np.zeros(num_queries, np.float64),
            first_relevant_rank=np.full(num_queries, -1, np.int64),
            hits_in_top_k={k: np.zeros(num_queries, np.int64) for k in ks},
        )


def retrieval_metrics(
    q_emb: Any,
    q_labels: Any,
    g_emb: Any,
    g_labels: Any,
    ks: Sequence[int] = (1, 5, 10),
    exclude_self: bool = False,
    knn: KnnFactory | None = None,
    normalize: bool = True,
) -> dict[str, float | int]:
    """Recall@k, precision@k, mAP and MAP@R of queries ``q_emb`` against gallery ``g_emb``.

    See the module docstring for definitions, the tie rule and ``exclude_self``.

    Args:
        q_emb, g_emb: ``(N, D)`` embeddings (numpy or torch); dims must match, else
            ``CompatibilityError``.
        q_labels, g_labels: integer class labels, one per embedding.
        ks: cut-offs for recall/precision.
        exclude_self: query i and gallery i are the same item (needs equal lengths).
        knn: optional backend factory (e.g. ``FaissExactIP``, or an approximate index). When
            given, recall@k, precision@k and MAP@R come from its neighbour lists (searched to
            depth max(max(ks), R)), which measures what that index would return; ``map`` needs
            the full ranking and is always computed exactly. ``None``: everything exact.
        normalize: L2-normalise both sides first, so the score is the cosine similarity.

    Raises:
        CompatibilityError: query and gallery dims differ.
        DataError: bad shapes/labels, or no query has any relevant gallery item.
    """
    queries, query_labels, gallery, gallery_labels = validated_pair(q_emb, q_labels, g_emb, g_labels, exclude_self)
    ks = _check_ks(ks)
    if normalize:
        queries, gallery = l2_normalize(queries), l2_normalize(gallery)
    effective_gallery = len(gallery) - int(exclude_self)
    if len(queries) == 0 or effective_gallery < 1:
        raise DataError(
            f"retrieval needs at least one query and one gallery item "
            f"(got {len(queries)} queries, {effective_gallery} gallery items to rank)"
        )
    query_ids, gallery_ids = compact_labels(query_labels, gallery_labels)

    stats = _exact_ranking_stats(queries, query_ids, gallery, gallery_ids, ks, exclude_self)
    if knn is not None:
        backend = knn(gallery)
        _replace_top_of_ranking_stats(
            stats, backend, queries, query_ids, gallery_ids, ks, exclude_self
        )
    return _summarise(stats, ks, len(queries), len(gallery), effective_gallery)


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks_list = sorted({int(k) for k in ks})
    if not ks_list or ks_list[0] < 1:
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    return ks_list


def _summarise(
    stats: _PerQueryStats,
    ks: list[int],
    num_queries: int,
    num_gallery: int,
    effective_gallery: int,
) -> dict[str, float | int]:
    has_relevant = stats.num_relevant > 0
    num_with_relevant = int(has_relevant.sum())
    if num_with_relevant == 0:
        raise DataError(
            "no query has a relevant gallery item (no query label occurs in the gallery labels"
            + (" besides the query itself" if effective_gallery < num_gallery else "")
            + "); check that queries and gallery use the same label set"
        )
    first = stats.first_relevant_rank[has_relevant]
    result: dict[str, float | int] = {}
    for k in ks:
        result[f"recall_at_{k}"] = float(np.mean(first < k))
    for k in ks:
        hits = stats.hits_in_top_k[k][has_relevant]
        result[f"precision_at_{k}"] = float(np.mean(hits / min(k, effective_gallery)))
    result["map"] = float(np.mean(stats.average_precision[has_relevant]))
    result["map_at_r"] = float(np.mean(stats.average_precision_at_r[has_relevant]))
    result["num_queries"] = num_queries
    result["num_gallery"] = num_gallery
    result["num_queries_without_relevant"] = num_queries - num_with_relevant
    return result


# ---------------------------------------------------------------------------------------------
# Exact engine: full rankings, chunked.


def _exact_ranking_stats(
    queries: np.ndarray,
    query_ids: np.ndarray,
    gallery: np.ndarray,
    gallery_ids: np.ndarray,
    ks: list[int],
    exclude_self: bool,
) -> _PerQueryStats:
    num_queries, num_gallery = len(queries), len(gallery)
    stats = _PerQueryStats.empty(num_queries, ks)
    chunk_rows = max(1, min(_MAX_CHUNK_QUERIES, _SCORE_CHUNK_ELEMENTS // num_gallery))
    block_rows = max(1, min(_MAX_BLOCK_QUERIES, _RANK_BLOCK_ELEMENTS // num_gallery))
    gallery_t = torch.from_numpy(gallery)
    workers = max(1, torch.get_num_threads())

    def rank_block(similarity: np.ndarray, first_query: int) -> None:
        stop = first_query + len(similarity)
        relevant = gallery_ids[None, :] == query_ids[first_query:stop, None]
        if exclude_self:
            rows = np.arange(len(similarity))
            similarity[rows, first_query + rows] = -np.inf  # ranked last ...
            relevant[rows, first_query + rows] = False  # ... and never relevant: no effect
        _stats_from_ranked_relevance(
            ranked_columns(similarity, relevant), stats, first_query, ks
        )

    with ThreadPoolExecutor(max_workers=workers) as pool, torch.inference_mode():
        for chunk_start in range(0, num_queries, chunk_rows):
            chunk = torch.from_numpy(queries[chunk_start : chunk_start + chunk_rows])
            similarity = (chunk @ gallery_t.T).numpy()
            jobs = [
                pool.submit(rank_block, similarity[i : i + block_rows], chunk_start + i)
                for i in range(0, len(similarity), block_rows)
            ]
            for job in jobs:
                job.result()  # re-raises worker errors
    return stats


def _stats_from_ranked_relevance(
    ranked_relevant: np.ndarray, stats: _PerQueryStats, first_query: int, ks: list[int]
) -> None:
    """Fill ``stats`` rows ``first_query:first_query + len(ranked_relevant)``."""
    rows, cols = ranked_relevant.shape
    hits = np.flatnonzero(ranked_relevant)
    hit_row = hits // cols
    hit_rank = hits - hit_row * cols  # 0-based rank of each relevant item, ascending per row
    _fill_stats_from_hits(stats, first_query, rows, hit_row, hit_rank, ks)


def _fill_stats_from_hits(
    stats: _PerQueryStats,
    first_query: int,
    rows: int,
    hit_row: np.ndarray,
    hit_rank: np.ndarray,
    ks: list[int],
    num_relevant: np.ndarray | None = None,
    fill_average_precision: bool = True,
) -> None:
    """Per-query metrics from the ranks of relevant items (grouped by row, ascending rank).

    ``num_relevant`` defaults to the number of hits per row (a full ranking lists them all).
    """
    sl = slice(first_query, first_query + rows)
    hits_per_row = np.bincount(hit_row, minlength=rows)
    row_start = np.cumsum(hits_per_row) - hits_per_row
    if num_relevant is None:
        num_relevant = hits_per_row
    position_among_relevant = np.arange(1, len(hit_row) + 1) - row_start[hit_row]
    precision_at_hit = position_among_relevant / (hit_rank + 1.0)
    denominator = np.maximum(num_relevant, 1)
    within_r = hit_rank < num_relevant[hit_row]
    stats.num_relevant[sl] = num_relevant
    if fill_average_precision:
        stats.average_precision[sl] = (
            np.bincount(hit_row, weights=precision_at_hit, minlength=rows) / denominator
        )
    stats.average_precision_at_r[sl] = (
        np.bincount(hit_row[within_r], weights=precision_at_hit[within_r], minlength=rows)
        / denominator
    )
    has_hit = hits_per_row > 0
    first_rank = np.full(rows, -1, np.int64)
    first_rank[has_hit] = hit_rank[row_start[has_hit]]
    stats.first_relevant_rank[sl] = first_rank
    for k in ks:
        stats.hits_in_top_k[k][sl] = np.bincount(hit_row[hit_rank < k], minlength=rows)


# ---------------------------------------------------------------------------------------------
# Optional kNN backend: top-of-ranking metrics from its neighbour lists.


def _replace_top_of_ranking_stats(
    stats: _PerQueryStats,
    backend: KnnBackend,
    queries: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    ks: list[int],
    exclude_self: bool,
) -> None:
    """Overwrite recall/precision/MAP@R inputs with results of ``backend.search``.

    ``num_relevant`` (R) comes from the labels; ``average_precision`` (full ranking) is kept.
    With ``exclude_self`` one extra neighbour is fetched and query i's own index removed (or the
    last neighbour dropped when it is absent), as pytorch-metric-learning does.
    """
    num_gallery = len(gallery_ids)
    effective_gallery = num_gallery - int(exclude_self)
    for start in range(0, len(queries), _KNN_CHUNK_QUERIES):
        stop = min(start + _KNN_CHUNK_QUERIES, len(queries))
        num_relevant = stats.num_relevant[start:stop].copy()
        depth = min(max(ks[-1], int(num_relevant.max())), effective_gallery)
        _, neighbours = backend.search(queries[start:stop], depth + int(exclude_self))
        neighbours = np.asarray(neighbours, dtype=np.int64)
        if exclude_self:
            neighbours = _drop_self(neighbours, np.arange(start, stop))
        relevant = gallery_ids[neighbours] == query_ids[start:stop, None]
        hit_row, hit_rank = np.nonzero(relevant)
        _fill_stats_from_hits(
            stats, start, stop - start, hit_row, hit_rank, ks,
            num_relevant=num_relevant, fill_average_precision=False,
        )


def _drop_self(neighbours: np.ndarray, self_indices: np.ndarray) -> np.ndarray:
    """Remove each row's own index (or its last column when absent): k+1 -> k columns."""
    is_self = neighbours == self_indices[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    # A row can list its own index at most once, so exactly one column goes per row.
    return neighbours[keep].reshape(len(neighbours), neighbours.shape[1] - 1)
