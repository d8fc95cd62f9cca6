"""EmbeddingModel = input normalisation + backbone + embedding head (+ classifier for training)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hetsearch.errors import ConfigError
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
    # "head": the embedding is the projection head's output (the classifier sees the embedding).
    # "backbone": the embedding is the pooled backbone features; the projection head only feeds
    # the training classifier (features one layer away from the loss keep more of each image,
    # which helps nearest-neighbour Recall@1; see docs/architecture.md).
    embedding_layer: str = "head"
    projection_dim: int | None = None  # projection head width in "backbone" mode (None: embedding_dim)

    def to_dict(self) -> dict:
        return asdict(self)


EMBEDDING_LAYERS = ("head", "backbone")


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
        if spec.embedding_layer not in EMBEDDING_LAYERS:
            raise ConfigError(f"model.embedding_layer: expected one of {', '.join(EMBEDDING_LAYERS)}, "
                             f"got {spec.embedding_layer!r}")
        classifier_dim = spec.embedding_dim
        if spec.embedding_layer == "backbone":
            if feature_dim != spec.embedding_dim:
                raise ConfigError(f"model.embedding_dim={spec.embedding_dim}: with model.embedding_layer=backbone "
                                 f"the embedding is the backbone's pooled features, {feature_dim} wide for "
                                 f"{spec.backbone} {spec.backbone_args or ''}; set model.embedding_dim={feature_dim}")
            classifier_dim = spec.projection_dim or spec.embedding_dim
        self.embedding_head = EmbeddingHead(feature_dim, classifier_dim)
        self.classifier = CosineClassifier(spec.num_classes, classifier_dim, spec.head,
                                           spec.head_scale, spec.head_margin)
        self.register_buffer("input_mean", torch.tensor(spec.mean), persistent=False)
        self.register_buffer("input_std", torch.tensor(spec.std), persistent=False)

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.spec.in_chans, self.spec.image_size, self.spec.image_size)

    @property
    def embeds_backbone_features(self) -> bool:
        return self.spec.embedding_layer == "backbone"

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeddings of float images in [0, 1]; `normalize=False` gives the raw embedding
        (training losses normalise themselves)."""
        features = self.backbone((x - self.input_mean) / self.input_std)
        embedding = features if self.embeds_backbone_features else self.embedding_head(features)
        return F.normalize(embedding, dim=1) if normalize else embedding

    def classifier_input(self, embedding: torch.Tensor) -> torch.Tensor:
        """What the classifier sees for a raw embedding: the embedding itself, or its projection
        when the embedding is the backbone features."""
        return self.embedding_head(embedding) if self.embeds_backbone_features else embedding


def create_model(backbone: str, *, num_classes: int, **spec_fields) -> EmbeddingModel:
    """timm-style factory: `create_model("resnet18", num_classes=10, backbone_args={"width": 16})`."""
    return EmbeddingModel(ModelSpec(backbone=backbone, num_classes=num_classes, **spec_fields))
