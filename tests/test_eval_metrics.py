"""Retrieval and verification metrics: hand-computed cases, tie rule, exclude_self, and
cross-checks against pytorch-metric-learning and between kNN backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hetsearch.errors import CompatibilityError, DataError
from hetsearch.eval import (
    FaissExactIP,
    TorchExactIP,
    evaluate_embeddings,
    evaluate_pair,
    retrieval_metrics,
    verification_metrics,
)
from hetsearch.eval.verification import _PairSampler

BACKENDS = [None, FaissExactIP, TorchExactIP]


def unit(*angles_deg: float) -> np.ndarray:
    angles = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, centers: np.ndarray, noise: float):
    labels = rng.integers(0, len(centers), n)
    x = centers[labels] + noise * rng.standard_normal((n, centers.shape[1]))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


# -- hand-computed retrieval ------------------------------------------------------------------

# Gallery on the unit circle (label A=0, B=1); scores for a query at 0 deg: 1, .8, .6, 0, -1.
GALLERY = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1], [-1, 0]], dtype=np.float32)
GALLERY_LABELS = np.array([0, 1, 0, 1, 0])
# q1 (1,0) A: relevant at ranks 1,3,5.   AP = (1 + 2/3 + 3/5)/3 = 34/45, MAP@R = (1 + 2/3)/3
# q2 (0,1) B: ranking 3B 2A 1B 0A 4A (0 and 4 tie at score 0 -> index order); relevant at 1,3:
#             AP = (1 + 2/3)/2 = 5/6, MAP@R = (1 + 0)/2
# q3 (0,1) A: relevant at ranks 2,4,5.   AP = (1/2 + 2/4 + 3/5)/3 = 8/15, MAP@R = (1/2)/3
# q4 (1,0) C: no relevant gallery item -> left out of every average.
QUERIES = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.float32)
QUERY_LABELS = np.array([0, 1, 0, 2])


@pytest.mark.parametrize("knn", BACKENDS)
def test_hand_computed_retrieval(knn):
    m = retrieval_metrics(QUERIES, QUERY_LABELS, GALLERY, GALLERY_LABELS, ks=(1, 2, 4), knn=knn)
    assert m["recall_at_1"] == pytest.approx(2 / 3)
    assert m["recall_at_2"] == pytest.approx(1.0)
    assert m["recall_at_4"] == pytest.approx(1.0)
    assert m["precision_at_1"] == pytest.approx(2 / 3)
    assert m["precision_at_2"] == pytest.approx(1 / 2)
    assert m["precision_at_4"] == pytest.approx(1 / 2)
    assert m["map"] == pytest.approx((34 / 45 + 5 / 6 + 8 / 15) / 3)
    assert m["map_at_r"] == pytest.approx((5 / 9 + 1 / 2 + 1 / 6) / 3)
    assert m["num_queries"] == 4
    assert m["num_gallery"] == 5
    assert m["num_queries_without_relevant"] == 1


def test_accepts_torch_tensors_and_unnormalised_inputs():
    ref = retrieval_metrics(QUERIES, QUERY_LABELS, GALLERY, GALLERY_LABELS, ks=(1, 2, 4))
    got = retrieval_metrics(
        torch.from_numpy(QUERIES * 3.0), torch.from_numpy(QUERY_LABELS),
        torch.from_numpy(GALLERY * 0.5), torch.from_numpy(GALLERY_LABELS), ks=(1, 2, 4),
    )
    assert got == pytest.approx(ref)


def test_precision_k_larger_than_gallery_is_clipped():
    m = retrieval_metrics(QUERIES[:1], QUERY_LABELS[:1], GALLERY, GALLERY_LABELS, ks=(10,))
    assert m["precision_at_10"] == pytest.approx(3 / 5)
    assert m["recall_at_10"] == 1.0


# -- tie rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize("knn", BACKENDS)
def test_ties_rank_lower_gallery_index_first(knn):
    # Gallery 0 and 1 are identical (exact tie); the query is that same vector, label 0.
    gallery = unit(30, 30, 100)
    query = unit(30)
    irrelevant_first = retrieval_metrics(query, [0], gallery, [1, 0, 0], ks=(1,), knn=knn)
    assert irrelevant_first["recall_at_1"] == 0.0  # index 0 (label 1) wins the tie
    assert irrelevant_first["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    relevant_first = retrieval_metrics(query, [0], gallery, [0, 1, 0], ks=(1,), knn=knn)
    assert relevant_first["recall_at_1"] == 1.0
    assert relevant_first["map"] == pytest.approx((1 + 2 / 3) / 2)


@pytest.mark.parametrize("backend", [FaissExactIP, TorchExactIP])
def test_backends_follow_tie_rule_inside_and_at_the_cut(backend):
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((300, 8)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    duplicates = [7, 40, 41, 150, 299, 3]
    gallery[duplicates] = gallery[7]
    scores, indices = backend(gallery).search(gallery[7:8], 4)
    assert indices[0].tolist() == [3, 7, 40, 41]  # lowest indices of the 6 tied, ascending
    assert len(set(scores[0].tolist())) == 1
    scores, indices = backend(gallery).search(gallery[7:8], 8)
    assert indices[0, :6].tolist() == sorted(duplicates)


def test_backends_agree_with_each_other_and_with_brute_force():
    rng = np.random.default_rng(1)
    gallery = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((70, 16)).astype(np.float32)
    expected = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :10]
    for backend in (FaissExactIP(gallery, query_chunk_size=32), TorchExactIP(gallery)):
        scores, indices = backend.search(queries, 10)
        assert indices.dtype == np.int64 and scores.dtype == np.float32
        np.testing.assert_array_equal(indices, expected)
        assert np.all(np.diff(scores, axis=1) <= 0)


# -- exclude_self ---------------------------------------------------------------------------------


@pytest.mark.parametrize("knn", BACKENDS)
def test_exclude_self_hand_computed(knn):
    # 0: 0 deg A, 1: ~37 deg B, 2: ~53 deg A. Without itself, query 0 ranks 1(B) then 2(A);
    # query 2 ranks 1(B) then 0(A); query 1 (B) has no other B -> no relevant item.
    points = GALLERY[:3]
    labels = np.array([0, 1, 0])
    m = retrieval_metrics(points, labels, points, labels, ks=(1, 2), exclude_self=True, knn=knn)
    assert m["recall_at_1"] == 0.0
    assert m["recall_at_2"] == 1.0
    assert m["map"] == pytest.approx(0.5)
    assert m["map_at_r"] == 0.0
    assert m["num_queries_without_relevant"] == 1
    with_self = retrieval_metrics(points, labels, points, labels, ks=(1,), knn=knn)
    assert with_self["recall_at_1"] == 1.0 and with_self["num_queries_without_relevant"] == 0


def test_exclude_self_equals_removing_each_query_from_the_gallery():
    rng = np.random.default_rng(2)
    x, labels = clustered(rng, 60, rng.standard_normal((4, 8)), noise=1.0)
    x[5] = x[9]  # an exact duplicate pair, so ties with the removed item occur
    m = retrieval_metrics(x, labels, x, labels, ks=(1, 3), exclude_self=True)
    per_query = []
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        per_query.append(retrieval_metrics(x[i : i + 1], labels[i : i + 1], x[rest], labels[rest],
                                           ks=(1, 3)))
    for key in ("recall_at_1", "recall_at_3", "precision_at_3", "map", "map_at_r"):
        assert m[key] == pytest.approx(np.mean([p[key] for p in per_query]), abs=1e-12), key


def test_exclude_self_needs_same_items():
    with pytest.raises(DataError, match="same items"):
        retrieval_metrics(QUERIES, QUERY_LABELS, GALLERY, GALLERY_LABELS, exclude_self=True)


# -- errors ------------------------------------------------------------------------------------


def test_dim_mismatch_raises_compatibility_error():
    with pytest.raises(CompatibilityError, match="query embeddings have dim 3 but gallery "
                                                 "embeddings have dim 2"):
        retrieval_metrics(np.ones((2, 3)), [0, 1], GALLERY, GALLERY_LABELS)
    with pytest.raises(CompatibilityError):
        verification_metrics(np.ones((2, 3)), [0, 1], GALLERY, GALLERY_LABELS)
    with pytest.raises(CompatibilityError):
        FaissExactIP(GALLERY).search(np.ones((2, 3), np.float32), 1)


def test_no_query_with_relevant_items_raises():
    with pytest.raises(DataError, match="no query has a relevant gallery item"):
        retrieval_metrics(QUERIES, [5, 5, 6, 7], GALLERY, GALLERY_LABELS)


def test_bad_inputs_raise_data_error():
    with pytest.raises(DataError, match="query labels"):
        retrieval_metrics(QUERIES, [0, 1], GALLERY, GALLERY_LABELS)
    with pytest.raises(DataError, match="NaN"):
        retrieval_metrics(np.full((1, 2), np.nan), [0], GALLERY, GALLERY_LABELS)


# -- cross-check with pytorch-metric-learning ---------------------------------------------------


@pytest.fixture(scope="module")
def clustered_sets():
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((10, 32))
    queries, query_labels = clustered(rng, 500, centers, noise=2.0)
    gallery, gallery_labels = clustered(rng, 2000, centers, noise=2.0)
    return queries, query_labels, gallery, gallery_labels


def _pml_accuracy(query, query_labels, reference, reference_labels, ref_includes_query):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count",
        device=torch.device("cpu"),
    )
    return calculator.get_accuracy(
        torch.from_numpy(query), torch.from_numpy(query_labels), torch.from_numpy(reference),
        torch.from_numpy(reference_labels), ref_includes_query=ref_includes_query,
    )


def test_matches_pytorch_metric_learning_separate_query_and_gallery(clustered_sets):
    queries, query_labels, gallery, gallery_labels = clustered_sets
    expected = _pml_accuracy(queries, query_labels, gallery, gallery_labels, False)
    got = retrieval_metrics(queries, query_labels, gallery, gallery_labels)
    assert 0.2 < got["map_at_r"] < 0.9  # a non-trivial case
    assert got["recall_at_1"] == pytest.approx(expected["precision_at_1"], abs=1e-4)
    assert got["map_at_r"] == pytest.approx(expected["mean_average_precision_at_r"], abs=1e-4)


def test_matches_pytorch_metric_learning_reference_includes_query(clustered_sets):
    _, _, gallery, gallery_labels = clustered_sets
    expected = _pml_accuracy(gallery, gallery_labels, gallery, gallery_labels, True)
    got = retrieval_metrics(gallery, gallery_labels, gallery, gallery_labels, exclude_self=True)
    assert got["recall_at_1"] == pytest.approx(expected["precision_at_1"], abs=1e-4)
    assert got["map_at_r"] == pytest.approx(expected["mean_average_precision_at_r"], abs=1e-4)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_backends_give_the_exact_engine_results(clustered_sets, exclude_self):
    queries, query_labels, gallery, gallery_labels = clustered_sets
    if exclude_self:
        queries, query_labels = gallery[:700], gallery_labels[:700]
        gallery, gallery_labels = queries, query_labels
    exact = retrieval_metrics(queries, query_labels, gallery, gallery_labels,
                              exclude_self=exclude_self)
    for backend in (FaissExactIP, TorchExactIP):
        got = retrieval_metrics(queries, query_labels, gallery, gallery_labels,
                                exclude_self=exclude_self, knn=backend)
        # Different matmul routines may round nearly-equal scores differently: tiny slack.
        assert got == pytest.approx(exact, abs=1e-6)


# -- verification ---------------------------------------------------------------------------------


def _brute_force_tar(q, ql, g, gl, far, exclude_self=False):
    scores = q @ g.T
    same = ql[:, None] == gl[None, :]
    keep = np.ones_like(same)
    if exclude_self:
        np.fill_diagonal(keep, False)
    impostor = np.sort(scores[~same & keep])[::-1]
    threshold = impostor[int(np.floor(far * len(impostor)))]
    return float(np.mean(scores[same & keep] > threshold))


def test_verification_perfect_separation_gives_tar_one():
    rng = np.random.default_rng(4)
    centers = np.eye(8) * 10
    q, ql = clustered(rng, 100, centers, noise=0.01)
    g, gl = clustered(rng, 200, centers, noise=0.01)
    m = verification_metrics(q, ql, g, gl, fars=(1e-1, 1e-2, 1e-3))
    assert m["tar_at_far_1e-01"] == m["tar_at_far_1e-02"] == m["tar_at_far_1e-03"] == 1.0
    assert m["num_genuine_pairs"] == int((ql[:, None] == gl[None, :]).sum())
    assert m["num_impostor_pairs"] == 100 * 200 - m["num_genuine_pairs"]


def test_verification_random_embeddings_give_tar_near_far():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((200, 16)).astype(np.float32)
    g = rng.standard_normal((300, 16)).astype(np.float32)
    ql, gl = rng.integers(0, 5, 200), rng.integers(0, 5, 300)
    m = verification_metrics(q, ql, g, gl, fars=(1e-1, 1e-2))
    assert m["tar_at_far_1e-01"] == pytest.approx(0.1, abs=0.03)
    assert m["tar_at_far_1e-02"] == pytest.approx(0.01, abs=0.01)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_verification_matches_brute_force_when_all_pairs_fit(exclude_self):
    rng = np.random.default_rng(6)
    g, gl = clustered(rng, 150, rng.standard_normal((4, 8)), noise=1.5)
    q, ql = (g, gl) if exclude_self else clustered(rng, 80, rng.standard_normal((4, 8)), 1.5)
    m = verification_metrics(q, ql, g, gl, fars=(0.2, 0.05, 0.01), exclude_self=exclude_self)
    for far in (0.2, 0.05, 0.01):
        key = f"tar_at_far_{far:.0e}"
        assert m[key] == pytest.approx(_brute_force_tar(q, ql, g, gl, far, exclude_self)), key
    if exclude_self:
        assert m["num_genuine_pairs"] == int((gl[:, None] == gl[None, :]).sum()) - len(gl)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_verification_sampling_is_seeded_and_valid(exclude_self):
    rng = np.random.default_rng(7)
    g, gl = clustered(rng, 400, rng.standard_normal((3, 8)), noise=1.0)
    q, ql = (g, gl) if exclude_self else clustered(rng, 300, rng.standard_normal((3, 8)), 1.0)
    kwargs = dict(max_genuine_pairs=5000, max_impostor_pairs=7000, exclude_self=exclude_self)
    first = verification_metrics(q, ql, g, gl, seed=1, **kwargs)
    assert first == verification_metrics(q, ql, g, gl, seed=1, **kwargs)
    assert first["num_genuine_pairs"] == 5000 and first["num_impostor_pairs"] == 7000

    sampler = _PairSampler(ql, gl, exclude_self)
    gq, gg = sampler.genuine(5000, np.random.default_rng(0))
    iq, ig = sampler.impostor(7000, np.random.default_rng(0))
    assert np.all(ql[gq] == gl[gg]) and np.all(ql[iq] != gl[ig])
    if exclude_self:
        assert not np.any(gq == gg)
        # Every genuine partner is reachable: sampled partners cover the non-self class members.
        assert len(set(zip(gq.tolist(), gg.tolist()))) > 4000


# -- evaluate -------------------------------------------------------------------------------------


def test_evaluate_embeddings_merges_retrieval_and_verification(clustered_sets):
    queries, query_labels, gallery, gallery_labels = clustered_sets
    m = evaluate_embeddings(queries[:100], query_labels[:100], gallery, gallery_labels,
                            fars=(1e-2,))
    for key in ("recall_at_1", "precision_at_10", "map", "map_at_r", "tar_at_far_1e-02",
                "threshold_at_far_1e-02", "num_queries", "num_genuine_pairs"):
        assert key in m
    assert all(0.0 <= m[k] <= 1.0 for k in m if k.startswith(("recall", "precision", "map", "tar")))


class _Flatten(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = torch.nn.Linear(4 * 4, dim, bias=False)

    def forward(self, x):
        return torch.nn.functional.normalize(self.proj(x.flatten(1)), dim=1)


def test_evaluate_pair_homogeneous_and_dim_mismatch():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(40) % 4
    model = _Flatten(8)
    m = evaluate_pair(model, model, images, labels, images, labels, exclude_self=True,
                      fars=(1e-1,), batch_size=16)
    assert m["num_queries"] == 40 and m["num_queries_without_relevant"] == 0
    # Same model without exclude_self: every query finds itself first.
    assert evaluate_pair(model, model, images, labels, images, labels,
                         fars=(1e-1,))["recall_at_1"] == 1.0
    with pytest.raises(CompatibilityError, match="dim 8 but gallery embeddings have dim 6"):
        evaluate_pair(model, _Flatten(6), images, labels, images, labels)
