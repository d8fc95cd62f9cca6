"""The ranking rule, in one place: best score first, equal scores by ascending gallery index.

Every ranking in hetsearch follows it — the metrics' full rankings, the kNN backends, the export
parity check, the index search (by item id), the service benchmark's exact ground truth — so two
code paths that rank the same scores return the same lists, ties included:

- `top_k(scores, k)`: the first k of each row of a score matrix (numpy or torch, any float dtype);
- `ranked_columns(scores, carry)`: the full ranking of each row of a float32 score matrix (an exact,
  fast radix sort), returned as ``carry`` permuted into ranking order (the metrics need only which
  ranked items are relevant);
- `sort_ties_by_index(scores, indices)`: re-orders candidate lists another engine returned (FAISS
  lists equal scores in its own order) into the rule's order.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = ["descending_sort_key", "ranked_columns", "sort_ties_by_index", "top_k"]

Scores = TypeVar("Scores", np.ndarray, torch.Tensor)


def top_k(scores: Scores, k: int) -> tuple[Scores, Scores]:
    """``(top scores, column indices)``, both ``(rows, k)``, of each row of ``scores``: descending
    score, equal scores by ascending column. Returns the type it is given (numpy or torch)."""
    as_numpy = isinstance(scores, np.ndarray)
    similarity = torch.from_numpy(scores) if as_numpy else scores
    if not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"k must be between 1 and the number of columns {similarity.shape[1]}, got {k}")
    kth_score = torch.topk(similarity, k, dim=1).values[:, -1:]
    above = similarity > kth_score
    at_kth = similarity == kth_score
    needed_at_kth = k - above.sum(dim=1, keepdim=True)
    take = above | (at_kth & (torch.cumsum(at_kth, dim=1, dtype=torch.int32) <= needed_at_kth))
    indices = take.nonzero()[:, 1].view(-1, k)  # exactly k per row, in ascending column order
    top = torch.gather(similarity, 1, indices)
    top, order = torch.sort(top, dim=1, descending=True, stable=True)
    indices = torch.gather(indices, 1, order)
    if as_numpy:
        return top.numpy(), indices.numpy()
    return top, indices


def sort_ties_by_index(scores: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-order each row of a candidate list by descending score, then ascending index."""
    order = np.lexsort((indices, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def descending_sort_key(similarity: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the descending order of the float32 scores.

    Positive floats order like their bit patterns; negative floats in reverse. ``+ 0.0`` turns
    -0.0 into +0.0 so the two zeros tie, as they compare equal.
    """
    bits = (similarity + np.float32(0.0)).view(np.int32)
    return (bits ^ (~(bits >> 31) & np.int32(0x7FFFFFFF))).view(np.uint32)


def ranked_columns(similarity: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """Boolean ``carry`` (same shape as the float32 ``similarity``) with each row permuted into
    ranking order (score descending, then column ascending).

    Two stable passes of numpy's 16-bit radix sort (low half of the key, then high half) sort
    by the full 32-bit key; stability keeps equal scores in ascending column order.
    """
    rows, cols = similarity.shape
    row_offsets = (np.arange(rows, dtype=np.int64) * cols)[:, None]
    key = descending_sort_key(similarity)
    order = np.argsort((key & np.uint32(0xFFFF)).astype(np.uint16), axis=1, kind="stable")
    order += row_offsets
    # Carry the high key half and the carried bit through the first permutation together.
    packed = (key & np.uint32(0xFFFF0000)) | carry.astype(np.uint32)
    packed = np.take(packed.ravel(), order.ravel()).reshape(rows, cols)
    order = np.argsort((packed >> np.uint32(16)).astype(np.uint16), axis=1, kind="stable")
    order += row_offsets
    carried_bits = (packed & np.uint32(1)).astype(np.bool_)
    return np.take(carried_bits.ravel(), order.ravel()).reshape(rows, cols)
