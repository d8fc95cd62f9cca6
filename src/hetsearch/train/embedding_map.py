"""A closed-form affine map of the query embedding onto the gallery's embeddings, folded into the model.

A query model trained for compatibility can still land off the gallery's embeddings by a distortion
that is close to linear, most of all on classes it never trained on. Ridge regression of the raw
query embedding onto the gallery's (unit) embedding of the same images finds such a map in seconds;
λ and whether to keep it at all are chosen on held-out items, and a kept map is folded into the
embedding head (`hetsearch.models.linear_map`: same architecture, cost and contract).

Two callers supply the targets (`MapTargets`):
- a catalogue refresh (`refresh.linear`, hetsearch.train.refresh): the index's stored embeddings;
- training with ``compat.linear_map: true`` (`training_map_targets`): the gallery model's embeddings
  of the run's own training images, a seeded share of them held out. Measured on the open set's
  validation classes (docs/compat.md, "The map without a catalogue"): M(q, g) 0.6176 -> 0.6918; on the
  closed set the held-out items never gained, so the map was never kept there.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from hetsearch.data import ImageSet
from hetsearch.eval.metrics import retrieval_metrics
from hetsearch.models import EmbeddingModel, load_checkpoint, save_checkpoint
from hetsearch.models.linear_map import fold_affine_map

LAMBDAS = (0.01, 1.0, 10.0)
MAX_FIT_ITEMS = 50_000      # training images the map is fitted on (a seeded sample of larger splits)
VAL_FRACTION, MAX_VAL_ITEMS = 0.1, 2000


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class MapTargets:
    """Images (uint8, as the query model takes them) and the unit gallery embeddings the map should reach:
    a share to fit on and a held-out share that chooses λ and whether to keep the map. Labels (-1: none)
    only score the held-out share."""

    train_images: torch.Tensor
    train_targets: np.ndarray
    train_labels: np.ndarray
    val_images: torch.Tensor
    val_targets: np.ndarray
    val_labels: np.ndarray
    fitted_on: str = ""

    def val_recall(self, queries: np.ndarray) -> float:
        """Held-out items searching the gallery embeddings: label Recall@1 against the fitted share when
        both are labelled, else whether the item's own gallery embedding comes first among all of them."""
        labels, train_labels = self.val_labels, self.train_labels
        if (labels >= 0).all() and (train_labels >= 0).all() and len(set(labels.tolist())) > 1:
            return retrieval_metrics(unit(queries), labels, self.train_targets, train_labels, ks=(1,))["recall_at_1"]
        everything = np.concatenate([self.val_targets, self.train_targets])
        return float(np.mean(np.argmax(unit(queries) @ everything.T, axis=1) == np.arange(len(queries))))


def fit_affine_map(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression [x, 1] -> y: (B (D, D), c (D,)); the bias is not penalised."""
    xb = np.c_[x, np.ones(len(x))]
    penalty = lam * np.eye(xb.shape[1])
    penalty[-1, -1] = 0.0
    solution = np.linalg.solve(xb.T @ xb + penalty, xb.T @ y)
    return solution[:-1], solution[-1]


@torch.no_grad()
def raw_embeddings(model: EmbeddingModel, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """The model's embeddings before L2 normalisation (what a folded map acts on), float64."""
    model.eval()
    device = next(model.parameters()).device
    parts = [model(images[i:i + batch_size].to(device).float().div_(255), normalize=False).double().cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts).numpy()


def apply_linear_map(model_path, targets: MapTargets, device: torch.device | str = "cpu") -> dict:
    """Fit the map on ``targets``' fitted share (λ from LAMBDAS), keep it only when it raises Recall@1 of
    the held-out share, fold it into the embedding head and save ``model_path`` again; what was done
    (also recorded in the checkpoint's ``linear_map``). Idempotent: a model that records a map is left
    as it is."""
    loaded = load_checkpoint(model_path)
    if "linear_map" in loaded.meta.extra or len(targets.val_images) == 0:
        return loaded.meta.extra.get("linear_map", {})
    started = time.perf_counter()
    model = loaded.model.to(device)
    x_train, x_val = raw_embeddings(model, targets.train_images), raw_embeddings(model, targets.val_images)
    before = targets.val_recall(x_val)
    fits = []
    for lam in LAMBDAS:
        matrix, bias = fit_affine_map(x_train, targets.train_targets, lam)
        fits.append((targets.val_recall(x_val @ matrix + bias), lam, matrix, bias))
    after, lam, matrix, bias = max(fits, key=lambda fit: fit[0])
    info = {"val_recall_at_1_before": round(before, 6), "val_recall_at_1_after": round(after, 6),
            "ridge_lambda": lam, "applied": bool(after > before), "fitted_on": len(targets.train_images),
            "validated_on": len(targets.val_images), "targets": targets.fitted_on,
            "seconds": round(time.perf_counter() - started, 1)}
    model = model.cpu()
    if info["applied"]:
        fold_affine_map(model, torch.from_numpy(matrix).float(), torch.from_numpy(bias).float())
    meta = loaded.meta
    save_checkpoint(model_path, model, classes=meta.classes, compatible_with=meta.compatible_with,
                    compatibility=meta.compatibility, config=meta.config, extra={**meta.extra, "linear_map": info})
    return info


def seeded_permutation(n: int, seed: int, salt: str) -> torch.Tensor:
    salt_int = int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + salt_int))


@torch.no_grad()
def gallery_embeddings(gallery: EmbeddingModel, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    gallery.eval()
    device = next(gallery.parameters()).device
    parts = [gallery(images[i:i + batch_size].to(device).float().div_(255)).double().cpu()
             for i in range(0, len(images), batch_size)]
    return unit(torch.cat(parts).numpy())


def training_map_targets(train_set, gallery: EmbeddingModel, seed: int) -> MapTargets:
    """The gallery model's embeddings of (a seeded sample of at most MAX_FIT_ITEMS of) the training images,
    VAL_FRACTION of them (at most MAX_VAL_ITEMS) held out. The gallery takes the same images as the query
    model (checked when training starts: the model contract)."""
    order = seeded_permutation(len(train_set), seed, "linear_map")[:MAX_FIT_ITEMS + MAX_VAL_ITEMS]
    n_val = min(int(round(VAL_FRACTION * len(order))), MAX_VAL_ITEMS, len(order) - 1)
    parts = []
    for picked in (order[n_val:].sort().values, order[:n_val].sort().values):
        subset = train_set.subset(picked)
        if not isinstance(subset, ImageSet):  # a streamed split: its sample decoded
            subset = subset.materialize(num_workers=None, what="the linear map's sample")
        parts.append((subset.images, gallery_embeddings(gallery, subset.images), subset.labels.numpy()))
    (train_x, train_y, train_l), (val_x, val_y, val_l) = parts
    return MapTargets(train_x, train_y, train_l, val_x, val_y, val_l,
                      fitted_on="the gallery model's embeddings of the training images")
