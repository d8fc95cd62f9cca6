"""Verification accuracy: true accept rate (TAR) at fixed false accept rates (FAR).

A pair (query item, gallery item) is scored by the inner product of the query embedding (from
the query model) and the gallery embedding (from the gallery model), so the pairs are formed
cross-model exactly as in retrieval. *Genuine* pairs share a label, *impostor* pairs do not.

Pair-sampling protocol (deterministic for a given ``seed``):

- Genuine pairs: if there are at most ``max_genuine_pairs`` of them, all are used; otherwise
  ``max_genuine_pairs`` pairs are drawn uniformly (with replacement) from all genuine pairs.
- Impostor pairs: likewise with ``max_impostor_pairs`` (default 1,000,000, i.e. 100 impostors
  above the threshold at FAR = 1e-4).
- With ``exclude_self=True`` (query i and gallery i are the same item) the pairs (i, i) are
  never formed.

Threshold at FAR f: with the N impostor scores sorted in descending order, the threshold is the
score at position m = floor(f * N) (0-based), i.e. the (1 - f) quantile; a pair is accepted when
its score is strictly greater, so at most m impostors (a fraction <= f) are accepted. TAR is the
fraction of genuine pairs accepted. When f * N < 1 the threshold is the largest impostor score
(measured FAR 0): such FARs cannot be resolved with N impostor pairs, so check
``num_impostor_pairs`` in the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hetsearch.errors import DataError
from hetsearch.eval._inputs import compact_labels, l2_normalize, validated_pair

__all__ = ["far_key", "verification_metrics"]

DEFAULT_FARS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
_PAIR_SCORE_CHUNK = 1 << 16


def far_key(far: float) -> str:
    """Name suffix of a FAR, e.g. ``1e-03`` (used in ``tar_at_far_1e-03``)."""
    return f"{far:.0e}"


def verification_metrics(
    q_emb: Any,
    q_labels: Any,
    g_emb: Any,
    g_labels: Any,
    fars: Sequence[float] = DEFAULT_FARS,
    max_genuine_pairs: int = 1_000_000,
    max_impostor_pairs: int = 1_000_000,
    seed: int = 0,
    exclude_self: bool = False,
    normalize: bool = True,
) -> dict[str, float | int]:
    """TAR at each FAR in ``fars`` over cross-model genuine/impostor pairs (see module docstring).

    Returns ``tar_at_far_{f}`` and ``threshold_at_far_{f}`` for each FAR (keys via ``far_key``),
    ``num_genuine_pairs`` and ``num_impostor_pairs``.

    Raises:
        CompatibilityError: query and gallery dims differ.
        DataError: bad shapes/labels, or there is no genuine or no impostor pair.
    """
    queries, query_labels, gallery, gallery_labels = validated_pair(q_emb, q_labels, g_emb, g_labels, exclude_self)
    for far in fars:
        if not 0.0 < far < 1.0:
            raise ValueError(f"each FAR must be in (0, 1), got {far}")
    if normalize:
        queries, gallery = l2_normalize(queries), l2_normalize(gallery)
    query_ids, gallery_ids = compact_labels(query_labels, gallery_labels)
    rng = np.random.default_rng(seed)

    pairs = _PairSampler(query_ids, gallery_ids, exclude_self)
    genuine_q, genuine_g = pairs.genuine(max_genuine_pairs, rng)
    impostor_q, impostor_g = pairs.impostor(max_impostor_pairs, rng)
    genuine_scores = _pair_scores(queries, gallery, genuine_q, genuine_g)
    impostor_scores = np.sort(_pair_scores(queries, gallery, impostor_q, impostor_g))[::-1]

    result: dict[str, float | int] = {}
    for far in fars:
        threshold = float(impostor_scores[int(np.floor(far * len(impostor_scores)))])
        result[f"tar_at_far_{far_key(far)}"] = float(np.mean(genuine_scores > threshold))
    for far in fars:
        threshold = float(impostor_scores[int(np.floor(far * len(impostor_scores)))])
        result[f"threshold_at_far_{far_key(far)}"] = threshold
    result["num_genuine_pairs"] = len(genuine_scores)
    result["num_impostor_pairs"] = len(impostor_scores)
    return result


def _pair_scores(
    queries: np.ndarray, gallery: np.ndarray, query_index: np.ndarray, gallery_index: np.ndarray
) -> np.ndarray:
    """Inner product of each (query, gallery) pair, in chunks to bound memory."""
    scores = np.empty(len(query_index), dtype=np.float32)
    for start in range(0, len(query_index), _PAIR_SCORE_CHUNK):
        stop = start + _PAIR_SCORE_CHUNK
        scores[start:stop] = np.einsum(
            "ij,ij->i", queries[query_index[start:stop]], gallery[gallery_index[start:stop]]
        )
    return scores


class _PairSampler:
    """Enumerates or uniformly samples genuine/impostor (query, gallery) index pairs."""

    def __init__(self, query_ids: np.ndarray, gallery_ids: np.ndarray, exclude_self: bool):
        self.query_ids, self.gallery_ids, self.exclude_self = query_ids, gallery_ids, exclude_self
        num_classes = int(max(query_ids.max(initial=-1), gallery_ids.max(initial=-1))) + 1
        self.gallery_by_class = np.argsort(gallery_ids, kind="stable")  # grouped, index order
        class_sizes = np.bincount(gallery_ids, minlength=num_classes)
        self.class_sizes = class_sizes
        self.class_start = np.cumsum(class_sizes) - class_sizes
        # Genuine partners per query (itself excluded under exclude_self: same label, same item).
        self.partners = class_sizes[query_ids] - int(exclude_self)
        self.num_genuine = int(self.partners.sum())
        self.num_impostor = len(query_ids) * len(gallery_ids) - int(
            class_sizes[query_ids].sum()
        )
        if self.num_genuine == 0:
            raise DataError("verification needs genuine pairs, but no query label occurs in the "
                            "gallery (besides the query itself)")
        if self.num_impostor == 0:
            raise DataError("verification needs impostor pairs, but every query and gallery "
                            "item has the same label")

    def genuine(self, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.num_genuine <= max_pairs:
            query_index = np.repeat(np.arange(len(self.query_ids)), self.partners)
            # Offsets 0..partners-1 within the query's class block, skipping the query itself.
            offsets = np.arange(self.num_genuine) - np.repeat(
                np.cumsum(self.partners) - self.partners, self.partners
            )
        else:
            query_index = rng.choice(
                len(self.query_ids), size=max_pairs, p=self.partners / self.num_genuine
            )
            offsets = rng.integers(0, self.partners[query_index])
        return query_index, self._gallery_partner(query_index, offsets)

    def _gallery_partner(self, query_index: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        labels = self.query_ids[query_index]
        if self.exclude_self:
            # Position of the query itself in its class block; offsets at or past it shift by 1.
            self_position = self._position_in_class_block(query_index)
            offsets = offsets + (offsets >= self_position)
        return self.gallery_by_class[self.class_start[labels] + offsets]

    def _position_in_class_block(self, gallery_index: np.ndarray) -> np.ndarray:
        position = np.empty(len(self.gallery_ids), dtype=np.int64)
        position[self.gallery_by_class] = np.arange(len(self.gallery_ids))
        return position[gallery_index] - self.class_start[self.gallery_ids[gallery_index]]

    def impostor(self, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        num_q, num_g = len(self.query_ids), len(self.gallery_ids)
        if self.num_impostor <= max_pairs:
            return self._all_impostors()
        # Rejection sampling of uniform (query, gallery) pairs with different labels.
        acceptance = self.num_impostor / (num_q * num_g)
        query_parts, gallery_parts, found = [], [], 0
        while found < max_pairs:
            draw = int((max_pairs - found) / acceptance * 1.1) + 16
            query_index = rng.integers(0, num_q, draw)
            gallery_index = rng.integers(0, num_g, draw)
            keep = self.query_ids[query_index] != self.gallery_ids[gallery_index]
            query_parts.append(query_index[keep])
            gallery_parts.append(gallery_index[keep])
            found += int(keep.sum())
        return (np.concatenate(query_parts)[:max_pairs], np.concatenate(gallery_parts)[:max_pairs])

    def _all_impostors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (query, gallery) pair with different labels, one query class at a time."""
        queries_by_class = np.argsort(self.query_ids, kind="stable")
        classes, first = np.unique(self.query_ids[queries_by_class], return_index=True)
        query_parts, gallery_parts = [], []
        for label, queries in zip(classes, np.split(queries_by_class, first[1:])):
            start = self.class_start[label]
            stop = start + self.class_sizes[label]
            others = np.concatenate([self.gallery_by_class[:start], self.gallery_by_class[stop:]])
            query_parts.append(np.repeat(queries, len(others)))
            gallery_parts.append(np.tile(others, len(queries)))
        return np.concatenate(query_parts), np.concatenate(gallery_parts)
