"""Embedding head and cosine classifier heads (normalised softmax, CosFace, ArcFace).

The classifier is written here rather than taken from pytorch-metric-learning's losses because
compatibility training needs the raw logits of a *frozen* classifier applied to another model's
embeddings, and the trainer adds label smoothing; the loss values are cross-checked against
pytorch-metric-learning's CosFaceLoss/ArcFaceLoss in the tests.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hetsearch.registries import HEADS

# model.head -> margin function: (cosine of the target class, margin) -> adjusted target cosine
DEFAULT_MARGINS: dict[str, float] = {}  # model.head -> the margin when model.head_margin is not set


def register_head(name: str, default_margin: float, *, description: str | None = None):
    """Decorator: register a margin function as ``model.head: name`` with its default margin."""
    def decorator(fn):
        HEADS.add(name, fn, description=description)
        DEFAULT_MARGINS[name] = float(default_margin)
        return fn

    return decorator


@register_head("norm_softmax", 0.0)
def _no_margin(cos_target: torch.Tensor, margin: float) -> torch.Tensor:
    """Normalised softmax: scaled cosine logits, no margin (NormFace)."""
    return cos_target


@register_head("cosface", 0.35)
def _additive_cosine_margin(cos_target: torch.Tensor, margin: float) -> torch.Tensor:
    """CosFace: additive cosine margin, cos(theta) - m on the target class."""
    return cos_target - margin


@register_head("arcface", 0.5)
def _additive_angular_margin(cos_target: torch.Tensor, margin: float) -> torch.Tensor:
    """ArcFace: additive angular margin, cos(theta + m) on the target class."""
    theta = torch.acos(cos_target.clamp(-1 + 1e-7, 1 - 1e-7))
    # beyond pi - m the angle would wrap around; fall back to the CosFace-style penalty there
    return torch.where(theta + margin < math.pi, torch.cos(theta + margin),
                       cos_target - margin * math.sin(margin))


class CosineClassifier(nn.Module):
    """logits = scale · cos(embedding, w_c), with the head's margin on the target class.

    The margin is applied only when labels are given (training); at inference it is plain cosine.
    """

    def __init__(self, num_classes: int, embedding_dim: int, head: str = "norm_softmax",
                 scale: float = 16.0, margin: float | None = None):
        super().__init__()
        HEADS.check(head)
        self.head = head
        self.scale = float(scale)
        self.margin = float(DEFAULT_MARGINS[head] if margin is None else margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return logits_with_margin(self.cosine(embeddings), labels, self.head, self.scale, self.margin)


def logits_with_margin(cosine: torch.Tensor, labels: torch.Tensor | None, head: str, scale: float,
                       margin: float) -> torch.Tensor:
    if labels is None or margin == 0.0:
        return scale * cosine
    target = cosine.gather(1, labels[:, None])
    adjusted = HEADS[head](target.float(), margin).to(cosine.dtype)
    return scale * cosine.scatter(1, labels[:, None], adjusted)


class EmbeddingHead(nn.Module):
    """Projection of pooled backbone features to the embedding dimension (Linear + BatchNorm)."""

    def __init__(self, feature_dim: int, embedding_dim: int):
        super().__init__()
        self.proj = nn.Linear(feature_dim, embedding_dim, bias=False)
        self.norm = nn.BatchNorm1d(embedding_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(features))
