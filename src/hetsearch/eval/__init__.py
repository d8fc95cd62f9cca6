"""Evaluation: embedding, kNN search, retrieval/verification metrics and model cost.

M(phi_q, phi_g) -- the accuracy of queries embedded by ``phi_q`` against a gallery embedded by
``phi_g`` -- is ``evaluate_pair(phi_q, phi_g, ...)``; from precomputed embeddings it is
``evaluate_embeddings``. All accuracies are fractions in [0, 1].
"""

from hetsearch.eval.classify import classification_accuracy
from hetsearch.eval.cost import measure_latency
from hetsearch.eval.embed import embed
from hetsearch.eval.evaluate import evaluate_embeddings, evaluate_pair
from hetsearch.eval.knn import (
    FaissExactIP,
    KnnBackend,
    KnnFactory,
    TorchExactIP,
    l2_normalize,
    sort_ties_by_index,
)
from hetsearch.eval.metrics import retrieval_metrics
from hetsearch.eval.verification import DEFAULT_FARS, far_key, verification_metrics

__all__ = [
    "classification_accuracy",
    "DEFAULT_FARS",
    "FaissExactIP",
    "KnnBackend",
    "KnnFactory",
    "TorchExactIP",
    "embed",
    "evaluate_embeddings",
    "evaluate_pair",
    "far_key",
    "l2_normalize",
    "measure_latency",
    "retrieval_metrics",
    "sort_ties_by_index",
    "verification_metrics",
]
