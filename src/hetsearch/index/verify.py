"""Verifying the model contract by measurement, not only by the declared ``compatible_with``.

At every write the index records a *reference* in its manifest (``verification``): a seeded sample
of its items and the gallery model's own accuracy on them, M(g, g), computed from the stored
gallery embeddings (no re-embedding), plus the accuracy chance would give. `verify_query_model`
embeds the sample's stored images (``thumbnails.npy``) with a query model and measures M(q, g) the
same way against the stored gallery embeddings; a query model near chance is not compatible,
whatever its metadata claims. It costs one batch of ``SAMPLE_SIZE`` query embeddings and a
``SAMPLE_SIZE x N`` inner product.

The measure: with labels (every item has one, at least two classes), label Recall@1 with the
sample item itself left out of the gallery; without labels, the share of sample items that find
themselves among their top ``SELF_K`` (M(g, g) is then 1 by construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from hetsearch.errors import CompatibilityError, HetsearchError
from hetsearch.index.check import THUMBNAILS_NAME, VECTORS_NAME

SAMPLE_SIZE = 200
SELF_K = 10
REFUSE_BELOW = 0.25    # refuse when M(q, g) < chance + REFUSE_BELOW * (M(g, g) - chance)
MIN_MARGIN = 0.05      # M(g, g) this close to chance: the check cannot tell (inconclusive)


def _has_labels(labels: Sequence[Optional[str]]) -> bool:
    return len(labels) > 1 and all(label is not None for label in labels) and len(set(labels)) > 1


def _scores(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray, labels, metric: str) -> float:
    """Mean hit rate of ``queries`` (embeddings of the items at ``rows``) against ``vectors``."""
    hits = []
    for start in range(0, len(queries), 64):
        block = np.asarray(queries[start:start + 64], dtype=np.float32)
        sims = block @ np.asarray(vectors, dtype=np.float32).T
        own = rows[start:start + 64]
        if metric == "label_recall@1":
            sims[np.arange(len(block)), own] = -np.inf
            nearest = np.argmax(sims, axis=1)
            hits += [labels[n] == labels[r] for n, r in zip(nearest, own)]
        else:
            k = min(SELF_K, sims.shape[1])
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            hits += [r in t for r, t in zip(own, top)]
    return float(np.mean(hits)) if hits else 0.0


def gallery_reference(ids: np.ndarray, vectors: np.ndarray, labels: Sequence[Optional[str]], *,
                      sample_size: int = SAMPLE_SIZE, seed: int = 0) -> dict:
    """The manifest's ``verification`` record for a gallery (stored embeddings, row order)."""
    n = len(ids)
    if n == 0:
        return {"metric": None, "sample_ids": [], "gallery_score": None, "chance": None}
    rows = np.sort(np.random.default_rng(seed).choice(n, min(sample_size, n), replace=False))
    if _has_labels(labels):
        metric = "label_recall@1"
        counts: dict = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        chance = float(np.mean([(counts[labels[r]] - 1) / (n - 1) for r in rows]))
    else:
        metric = f"self_recall@{SELF_K}"
        chance = min(SELF_K, n) / n
    score = _scores(np.asarray(vectors)[rows], vectors, rows, labels, metric)
    return {"metric": metric, "sample_ids": [int(i) for i in np.asarray(ids)[rows]], "gallery_score": round(score, 6),
            "chance": round(chance, 6)}


@dataclass
class Verification:
    metric: str
    sample_size: int
    query_score: float      # M(q, g) on the sample
    gallery_score: float    # M(g, g) on the sample, recorded at the index's last write
    chance: float
    threshold: float
    verdict: str            # "ok" | "near_chance" | "inconclusive"

    def summary(self, query_id: str, gallery_id: str) -> str:
        text = (f"M(query {query_id}, gallery {gallery_id}) = {self.query_score:.3f} {self.metric} on "
                f"{self.sample_size} stored gallery images; M(g, g) = {self.gallery_score:.3f}, chance "
                f"{self.chance:.3f}")
        if self.verdict == "near_chance":
            return (f"{text}: near chance (below {self.threshold:.3f}), so the query model is not compatible with "
                    "this index's gallery model whatever its metadata declares; use a query model trained "
                    "against this gallery model")
        if self.verdict == "inconclusive":
            return f"{text}: the gallery model itself is too close to chance on this sample to tell"
        return f"{text}: compatible"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def verify_query_model(gallery, encoder) -> Verification:
    """Measure M(q, g) on the index's stored sample (``gallery``: an open `GalleryIndex`; ``encoder``:
    a `QueryEncoder`)."""
    reference = gallery.manifest.get("verification") or {}
    if not reference.get("sample_ids"):
        raise CompatibilityError(f"{gallery.path}: the index records no verification sample (written by an older "
                                 f"hetsearch); run `hetsearch index rebuild --index {gallery.path} --type "
                                 f"{gallery.manifest['index_type']}` to add one")
    ids = gallery.ids
    sample = np.asarray(reference["sample_ids"], dtype=np.int64)
    rows = np.searchsorted(ids, sample)
    if np.any(rows >= len(ids)) or np.any(ids[np.minimum(rows, len(ids) - 1)] != sample):
        raise CompatibilityError(f"{gallery.path}: the verification sample names items that are not in the index; "
                                 f"run `hetsearch index check {gallery.path}`")
    vectors = np.load(gallery.path / VECTORS_NAME, mmap_mode="r", allow_pickle=False)
    thumbnails = gallery.thumbnails if gallery.thumbnails is not None else \
        np.load(gallery.path / THUMBNAILS_NAME, mmap_mode="r", allow_pickle=False)
    images = np.ascontiguousarray(thumbnails[rows])
    if tuple(images.shape[1:]) != tuple(encoder.input_shape):
        raise CompatibilityError(f"query model {encoder.meta.model_id} takes {encoder.input_shape} images, the index "
                                 f"stores {tuple(images.shape[1:])}")
    queries = np.concatenate([encoder.embed(images[i:i + 64]) for i in range(0, len(images), 64)])
    labels = gallery.all_labels() if reference["metric"] == "label_recall@1" else [None] * len(ids)
    score = _scores(queries, vectors, rows, labels, reference["metric"])
    chance, reference_score = float(reference["chance"]), float(reference["gallery_score"])
    threshold = chance + REFUSE_BELOW * (reference_score - chance)
    if reference_score - chance < MIN_MARGIN:
        verdict = "inconclusive"
    else:
        verdict = "ok" if score >= threshold else "near_chance"
    return Verification(metric=reference["metric"], sample_size=len(sample), query_score=round(score, 6),
                        gallery_score=reference_score, chance=chance, threshold=round(threshold, 6), verdict=verdict)


def enforce(result: Verification, query_id: str, gallery_id: str, *, refuse: bool = True) -> Optional[str]:
    """Raise CompatibilityError for a near-chance result when ``refuse``; else return a warning
    (or None when the query model passed)."""
    if result.verdict == "ok":
        return None
    message = result.summary(query_id, gallery_id)
    if result.verdict == "near_chance" and refuse:
        raise CompatibilityError(message + " (--verify warn searches anyway)")
    return message


VERIFY_MODES = ("off", "warn", "refuse")


def check_verify_option(value: str) -> str:
    """``value`` when it is a `--verify` mode (off | warn | refuse); HetsearchError otherwise."""
    if value not in VERIFY_MODES:
        raise HetsearchError(f"--verify: got {value!r}, expected off, warn or refuse")
    return value


def run_verification(gallery, encoder, mode: str) -> list[str]:
    """The optional start-up check of `query` and `serve` (``mode``: off | warn | refuse); returns warnings."""
    if check_verify_option(mode) == "off":
        return []
    message = enforce(verify_query_model(gallery, encoder), encoder.meta.model_id, gallery.gallery_model_id,
                      refuse=mode == "refuse")
    return [message] if message else []
