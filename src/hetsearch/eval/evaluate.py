"""One-call evaluation: retrieval + verification metrics, from embeddings or from two models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hetsearch.eval._inputs import check_exclude_self
from hetsearch.eval.embed import embed
from hetsearch.eval.knn import KnnFactory
from hetsearch.eval.metrics import retrieval_metrics
from hetsearch.eval.verification import DEFAULT_FARS, verification_metrics

__all__ = ["evaluate_embeddings", "evaluate_pair"]


def evaluate_embeddings(
    q_emb: Any,
    q_labels: Any,
    g_emb: Any,
    g_labels: Any,
    exclude_self: bool = False,
    ks: Sequence[int] = (1, 5, 10),
    fars: Sequence[float] = DEFAULT_FARS,
    knn: KnnFactory | None = None,
    max_genuine_pairs: int = 1_000_000,
    max_impostor_pairs: int = 1_000_000,
    seed: int = 0,
) -> dict[str, float | int]:
    """``retrieval_metrics`` and ``verification_metrics`` merged into one flat dict.

    Keys: ``recall_at_{k}``, ``precision_at_{k}``, ``map``, ``map_at_r``, ``tar_at_far_{f}``,
    ``threshold_at_far_{f}``, ``num_queries``, ``num_gallery``, ``num_queries_without_relevant``,
    ``num_genuine_pairs``, ``num_impostor_pairs``.
    """
    result = retrieval_metrics(
        q_emb, q_labels, g_emb, g_labels, ks=ks, exclude_self=exclude_self, knn=knn
    )
    result.update(
        verification_metrics(
            q_emb, q_labels, g_emb, g_labels, fars=fars, exclude_self=exclude_self,
            max_genuine_pairs=max_genuine_pairs, max_impostor_pairs=max_impostor_pairs,
            seed=seed,
        )
    )
    return result


def evaluate_pair(
    query_model: nn.Module,
    gallery_model: nn.Module,
    query_images: Any,
    query_labels: Any,
    gallery_images: Any,
    gallery_labels: Any,
    exclude_self: bool = False,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    ks: Sequence[int] = (1, 5, 10),
    fars: Sequence[float] = DEFAULT_FARS,
    knn: KnnFactory | None = None,
    seed: int = 0,
) -> dict[str, float | int]:
    """M(query_model, gallery_model): embed the queries with ``query_model`` and the gallery with
    ``gallery_model`` (uint8 ``N x C x H x W`` images), then ``evaluate_embeddings``.

    ``exclude_self=True`` means query i and gallery i are the same *item* (homogeneous protocol:
    each query against the rest of its split); it applies whether or not the two models are the
    same. When they are the same model and the same images, the images are embedded once.
    This function holds no checkpoint/compatibility logic: callers check the model contract.
    """
    if exclude_self:
        check_exclude_self(len(query_images), len(gallery_images))
    query_emb = embed(query_model, query_images, batch_size=batch_size, device=device)
    if gallery_model is query_model and _same_images(query_images, gallery_images):
        gallery_emb = query_emb
    else:
        gallery_emb = embed(gallery_model, gallery_images, batch_size=batch_size, device=device)
    return evaluate_embeddings(
        query_emb, query_labels, gallery_emb, gallery_labels, exclude_self=exclude_self, ks=ks,
        fars=fars, knn=knn, seed=seed,
    )


def _same_images(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.device == b.device and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return False
