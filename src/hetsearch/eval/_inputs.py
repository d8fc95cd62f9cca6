"""Validation and conversion of embeddings and labels shared by the evaluation modules."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hetsearch.errors import CompatibilityError, DataError


def as_embeddings(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 matrix ``(N, D)`` of finite values.

    Accepts numpy arrays and torch tensors (moved to CPU). Raises ``DataError`` naming ``name``
    when the shape is not 2-D, the matrix is empty along D, or a value is NaN/inf.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    array = np.ascontiguousarray(x, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] == 0:
        raise DataError(f"{name}: expected a 2-D array (N, D) with D > 0, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{name}: embeddings contain NaN or infinite values")
    return array


def as_labels(x: Any, expected_len: int, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D int64 array of length ``expected_len`` (raises ``DataError``)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    labels = np.asarray(x)
    if labels.ndim != 1 or len(labels) != expected_len:
        raise DataError(
            f"{name}: expected a 1-D array of {expected_len} labels (one per embedding), "
            f"got shape {labels.shape}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name}: expected integer class labels, got dtype {labels.dtype}")
    return labels.astype(np.int64, copy=False)


def check_same_dim(query_dim: int, gallery_dim: int) -> None:
    """Raise ``CompatibilityError`` when query and gallery embeddings live in different spaces."""
    if query_dim != gallery_dim:
        raise CompatibilityError(
            f"query embeddings have dim {query_dim} but gallery embeddings have dim {gallery_dim}; "
            "the query model must embed into the gallery model's space (same dimension)"
        )


def check_exclude_self(num_queries: int, num_gallery: int) -> None:
    """``exclude_self`` pairs query i with gallery i, so both sides must hold the same items."""
    if num_queries != num_gallery:
        raise DataError(
            f"exclude_self=True needs the queries and the gallery to be the same items "
            f"(query i = gallery i), but there are {num_queries} queries and {num_gallery} "
            "gallery items"
        )


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


def compact_labels(*label_arrays: np.ndarray) -> list[np.ndarray]:
    """Map arbitrary int64 labels of several arrays to shared compact int32 ids 0..C-1."""
    _, inverse = np.unique(np.concatenate(label_arrays), return_inverse=True)
    inverse = inverse.astype(np.int32, copy=False)
    out, start = [], 0
    for labels in label_arrays:
        out.append(inverse[start : start + len(labels)])
        start += len(labels)
    return out


def validated_pair(q_emb: Any, q_labels: Any, g_emb: Any, g_labels: Any,
                   exclude_self: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The checks every query-vs-gallery metric starts with; returns (queries, query labels,
    gallery, gallery labels) as validated arrays."""
    queries = as_embeddings(q_emb, "query embeddings")
    gallery = as_embeddings(g_emb, "gallery embeddings")
    check_same_dim(queries.shape[1], gallery.shape[1])
    query_labels = as_labels(q_labels, len(queries), "query labels")
    gallery_labels = as_labels(g_labels, len(gallery), "gallery labels")
    if exclude_self:
        check_exclude_self(len(queries), len(gallery))
    return queries, query_labels, gallery, gallery_labels
