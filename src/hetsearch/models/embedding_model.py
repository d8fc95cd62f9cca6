"""EmbeddingModel = input normalisation + backbone + embedding head (+ classifier for training)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hetsearch.data.preprocessing import Preprocessing, preprocessing_from_saved_config
from hetsearch.errors import ConfigError
from hetsearch.models.heads import CosineClassifier, EmbeddingHead
from hetsearch.models.pretrained import load_pretrained_backbone
from hetsearch.models.registry import create_backbone, default_input_norm


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
    # Input normalisation (x - mean) / std inside the model: per channel (a list of in_chans
    # values), a scalar for every channel (checkpoints before per-channel normalisation: 0.5 /
    # 0.25), or None: the backbone's pretrained config (ImageNet statistics for the timm and
    # torchvision backbones), resolved when the model is built and stored resolved.
    mean: float | list[float] | None = None
    std: float | list[float] | None = None
    # How user images are brought to image_size ("center_crop" or "stretch") and the colour
    # transparent pixels are composited on: with in_chans, image_size, mean and std, the model's
    # `preprocessing` (checkpoints written before these fields take them from their saved data config).
    resize: str = "center_crop"
    background: str = "white"
    backbone_args: dict = field(default_factory=dict)
    # "head": the embedding is the projection head's output (the classifier sees the embedding).
    # "backbone": the embedding is the pooled backbone features; the projection head only feeds
    # the training classifier (features one layer away from the loss keep more of each image,
    # which helps nearest-neighbour Recall@1; see docs/architecture.md).
    embedding_layer: str = "head"
    projection_dim: int | None = None  # projection head width in "backbone" mode (None: embedding_dim)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def preprocessing(self) -> Preprocessing:
        """How an image becomes this model's input (size, channels, mean, std, resize, background)."""
        return Preprocessing(image_size=self.image_size, channels=self.in_chans, mean=self.mean, std=self.std,
                             resize=self.resize, background=self.background)

    @classmethod
    def from_dict(cls, d: dict, saved_config: dict | None = None) -> "ModelSpec":
        """A stored spec; one written before the spec carried ``resize`` and ``background`` takes them
        from ``saved_config`` (the checkpoint's training config), as they were read before."""
        d = dict(d)
        for name, value in preprocessing_from_saved_config(saved_config).items():
            d.setdefault(name, value)
        return cls(**d)


EMBEDDING_LAYERS = ("head", "backbone")


def _norm_values(value, in_chans: int, field_name: str) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else None
    if values is None or len(values) != in_chans or not all(isinstance(v, (int, float)) for v in values):
        raise ConfigError(f"model.{field_name}: got {value!r}, expected {in_chans} number(s), one per input channel")
    if field_name == "std" and any(v <= 0 for v in values):
        raise ConfigError(f"model.std: got {value!r}, expected positive numbers")
    return [float(v) for v in values]


def resolve_input_norm(spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The (mean, std) buffers of a spec; fills ``spec.mean``/``spec.std`` when they are None.

    A scalar stays a 0-d tensor (bit-identical outputs for checkpoints written before per-channel
    normalisation); a list becomes a (1, C, 1, 1) tensor.
    """
    if spec.mean is None or spec.std is None:
        mean, std = default_input_norm(spec.backbone, spec.in_chans, **spec.backbone_args)
        spec.mean = mean if spec.mean is None else spec.mean
        spec.std = std if spec.std is None else spec.std
    tensors = []
    for name in ("mean", "std"):
        value = getattr(spec, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if name == "std" and value <= 0:
                raise ConfigError(f"model.std: got {value!r}, expected a positive number")
            tensors.append(torch.tensor(float(value)))
        else:
            values = _norm_values(value, spec.in_chans, name)
            setattr(spec, name, values)
            tensors.append(torch.tensor(values).view(1, -1, 1, 1))
    return tensors[0], tensors[1]


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
        mean, std = resolve_input_norm(spec)
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)

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


def create_model(backbone: str, *, num_classes: int, pretrained_file: str | None = None,
                 **spec_fields) -> EmbeddingModel:
    """timm-style factory: `create_model("resnet18", num_classes=10, backbone_args={"width": 16})`.

    ``pretrained_file``: a local timm/torchvision weights file loaded into the backbone (see
    `hetsearch.models.pretrained`); not part of the spec, so loading a checkpoint never reads it.
    """
    return _with_pretrained(EmbeddingModel(ModelSpec(backbone=backbone, num_classes=num_classes, **spec_fields)),
                            pretrained_file)


def _with_pretrained(model: EmbeddingModel, pretrained_file: str | None) -> EmbeddingModel:
    if pretrained_file:
        load_pretrained_backbone(model.backbone, pretrained_file, backbone_name=model.spec.backbone)
    return model


def spec_from_config(model, data, *, num_classes: int) -> ModelSpec:
    """The one mapping from a run config to a ModelSpec: the architecture (``model:``) and the
    preprocessing the model carries (``data.image_size``, ``data.channels``, ``data.resize``,
    ``data.background``, ``model.mean``, ``model.std``). ``model`` and ``data`` are a run config's
    `ModelConfig` and `DataConfig` sections."""
    return ModelSpec(backbone=model.backbone, num_classes=num_classes, embedding_dim=model.embedding_dim,
                     head=model.head, head_scale=model.head_scale, head_margin=model.head_margin,
                     in_chans=data.channels, image_size=data.image_size, mean=model.mean, std=model.std,
                     resize=data.resize, background=data.background, backbone_args=model.backbone_args,
                     embedding_layer=model.embedding_layer, projection_dim=model.projection_dim)


def create_model_from_config(model, data, *, num_classes: int) -> EmbeddingModel:
    """The EmbeddingModel of a run config (`spec_from_config`), with ``model.pretrained_file``
    loaded into its backbone when set."""
    return _with_pretrained(EmbeddingModel(spec_from_config(model, data, num_classes=num_classes)),
                            model.pretrained_file)
