"""Baselines that make φ_q imitate φ_g directly, image by image (no classifier involved).

Both run the frozen gallery model on the very batch the query model sees (same augmentation), so
the target is φ_g of the same pixels:

- `l2`      L2 regression of the query model's raw embedding (the projection head's output, before
            L2 normalisation) onto the gallery model's raw embedding: mean squared error per
            coordinate. It asks for the same vector, scale included.
- `distill` feature distillation on directions only: mean (1 - cos(φ_q(x), φ_g(x))). Retrieval
            uses normalised embeddings, so this asks for exactly what search needs. (On normalised
            vectors the squared L2 distance is 2 - 2 cos, which is why `l2` regresses raw ones: the
            two baselines would otherwise be the same loss.)

Compared with BCT they need a gallery forward pass per batch (the gallery model is usually the
expensive one), and they ignore labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from hetsearch.compat.base import CompatibilityTerm, register_compat_method
from hetsearch.compat.gallery import FrozenGallery, check_same_embedding_space


def l2_regression_loss(query_raw: torch.Tensor, gallery_raw: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(query_raw, gallery_raw)


def cosine_distillation_loss(query_raw: torch.Tensor, gallery_raw: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(query_raw, gallery_raw, dim=1)).mean()


class FeatureMatchingTerm(CompatibilityTerm):
    """loss(φ_q(x), φ_g(x)) against a frozen gallery model run on the same images."""

    needs_gallery_forward = True
    frozen_submodules = ("gallery",)  # the gallery model: loaded from its checkpoint, never checkpointed
    method_name = ""                  # set by the registered subclasses
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = staticmethod(l2_regression_loss)

    def __init__(self, method: str, gallery: FrozenGallery, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.method = method
        self.gallery = gallery
        self.loss = loss
        self.summary = {"method": method, "gallery_model_id": gallery.model_id}

    @property
    def gallery_model_id(self) -> str:
        return self.gallery.model_id

    def forward(self, embeddings: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        target = self.gallery(images, normalize=False)
        return self.loss(embeddings.float(), target)

    @classmethod
    def build(cls, cfg, *, model_spec, classes: list[str], train_set, run_dir: Path | None,
              device: torch.device | str, augment) -> "FeatureMatchingTerm":
        gallery = FrozenGallery.load(cfg.gallery_model)
        check_same_embedding_space(model_spec, gallery.meta, cls.method_name)
        return cls(cls.method_name, gallery, cls.loss_fn).to(device)


@register_compat_method("l2")
class L2RegressionTerm(FeatureMatchingTerm):
    """L2 regression of the raw query embedding onto the gallery's, image by image."""

    method_name = "l2"
    loss_fn = staticmethod(l2_regression_loss)


@register_compat_method("distill")
class DistillationTerm(FeatureMatchingTerm):
    """Feature distillation on directions: mean 1 - cos(φ_q(x), φ_g(x))."""

    method_name = "distill"
    loss_fn = staticmethod(cosine_distillation_loss)
