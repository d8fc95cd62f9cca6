"""One ranking rule (hetsearch.eval.ranking): every top-k and full ranking lists equal scores by
ascending index, and returns what the earlier, separate implementations returned (the references
below are those implementations, copied)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hetsearch.eval import FaissExactIP, TorchExactIP
from hetsearch.eval.ranking import ranked_columns, sort_ties_by_index, top_k


def tied_scores(rows: int, cols: int, seed: int, dtype=np.float32) -> np.ndarray:
    """Scores from a handful of values, so most rows hold long runs of ties (and -0.0 / +0.0)."""
    rng = np.random.default_rng(seed)
    scores = rng.choice(np.array([-1.0, -0.0, 0.0, 0.25, 0.5, 1.0]), size=(rows, cols)).astype(dtype)
    return scores


def reference_order(scores: np.ndarray) -> np.ndarray:
    """The rule, stated directly: stable sort of the negated scores (what export/exporter.py did)."""
    return np.argsort(-scores.astype(np.float64), axis=1, kind="stable")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 17, 40])
def test_top_k_follows_the_rule_numpy_and_torch(dtype, k):
    scores = tied_scores(9, 40, seed=k, dtype=dtype)
    expected = reference_order(scores)[:, :k]
    top, indices = top_k(scores, k)
    assert isinstance(indices, np.ndarray) and indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(top, np.take_along_axis(scores, expected, axis=1))
    top_t, indices_t = top_k(torch.from_numpy(scores), k)
    assert isinstance(indices_t, torch.Tensor)
    np.testing.assert_array_equal(indices_t.numpy(), expected)


def test_top_k_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be between 1"):
        top_k(np.zeros((2, 3), np.float32), 4)


def test_full_ranking_follows_the_rule():
    scores = tied_scores(7, 300, seed=1)
    scores[0] = np.random.default_rng(0).normal(size=300).astype(np.float32)  # one row without ties
    carry = np.random.default_rng(2).random((7, 300)) < 0.3
    expected = np.take_along_axis(carry, reference_order(scores), axis=1)
    np.testing.assert_array_equal(ranked_columns(scores, carry), expected)


def test_candidate_lists_are_reordered_by_the_rule():
    scores = np.array([[0.5, 0.9, 0.5, 0.5], [1.0, 1.0, -3.4e38, -3.4e38]], dtype=np.float32)
    ids = np.array([[7, 3, 2, 9], [5, 4, -1, -1]], dtype=np.int64)
    sorted_scores, sorted_ids = sort_ties_by_index(scores, ids)
    np.testing.assert_array_equal(sorted_ids, [[3, 2, 7, 9], [4, 5, -1, -1]])
    np.testing.assert_array_equal(sorted_scores[0], np.float32([0.9, 0.5, 0.5, 0.5]))


@pytest.mark.parametrize("k", [1, 5, 12])
def test_knn_backends_and_top_k_agree_on_ties(k):
    rng = np.random.default_rng(3)
    gallery = rng.integers(0, 3, size=(60, 4)).astype(np.float32)  # many identical rows: exact ties
    queries = rng.integers(0, 3, size=(11, 4)).astype(np.float32)
    expected = top_k(queries @ gallery.T, k)[1]
    np.testing.assert_array_equal(FaissExactIP(gallery).search(queries, k)[1], expected)
    np.testing.assert_array_equal(TorchExactIP(gallery, query_chunk_size=4).search(queries, k)[1], expected)


def test_export_parity_ranking_is_unchanged():
    from hetsearch.export.exporter import _topk

    rng = np.random.default_rng(4)
    gallery = rng.integers(0, 2, size=(50, 3)).astype(np.float32)
    queries = rng.integers(0, 2, size=(6, 3)).astype(np.float32)
    order, scores = _topk(queries, gallery, 10)
    sims = queries.astype(np.float64) @ gallery.astype(np.float64).T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :10]  # the exporter's earlier code
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(scores, np.take_along_axis(sims, expected, axis=1))
