"""EmbeddingModel = input normalisation + backbone + embedding head (+ classifier for training)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hetsearch.models.heads import CosineClassifier, EmbeddingHead
from hetsearch.models.registry import create_backbone


@dataclass
class ModelSpec:
    """Everything needed to rebuild an EmbeddingModel's architecture (stored in checkpoints)."""

    backbone: str
    num_classes: int
    embedding_dim: int = 128
    head: str = "norm_softmax"
    head_scale: float = 16.0
    head_margin: float | None = None
    in_chans: int = 1
    image_size: int = 28
    mean: float = 0.5
    std: float = 0.25
    backbone_args: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class EmbeddingModel(nn.Module):
    """Maps float images in [0, 1] (N×C×H×W) to L2-normalised embeddings (N×D).

    The classifier is used only by training losses; `forward` never touches it, so a query model
    and a gallery model are compared on embeddings alone.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.backbone, feature_dim = create_backbone(
            spec.backbone, in_chans=spec.in_chans, image_size=spec.image_size, **spec.backbone_args)
        self.embedding_head = EmbeddingHead(feature_dim, spec.embedding_dim)
        self.classifier = CosineClassifier(spec.num_classes, spec.embedding_dim, spec.head,
                                           spec.head_scale, spec.head_margin)
        self.register_buffer("input_mean", torch.tensor(spec.mean), persistent=False)
        self.register_buffer("input_std", torch.tensor(spec.std), persistent=False)

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.spec.in_chans, self.spec.image_size, self.spec.image_size)

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeddings of float images in [0, 1]; `normalize=False` gives the raw projection
        (training losses normalise themselves)."""
        embedding = self.embedding_head(self.backbone((x - self.input_mean) / self.input_std))
        return F.normalize(embedding, dim=1) if normalize else embedding


def create_model(backbone: str, *, num_classes: int, **spec_fields) -> EmbeddingModel:
    """timm-style factory: `create_model("resnet18", num_classes=10, backbone_args={"width": 16})`."""
    return EmbeddingModel(ModelSpec(backbone=backbone, num_classes=num_classes, **spec_fields))
