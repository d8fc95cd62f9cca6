"""Typed configuration: YAML files → nested dataclasses, with `key=value` overrides.

One YAML per pipeline stage (see `configs/`). Unknown keys are errors that list the valid ones,
so a typo never silently falls back to a default. The sections are defined here; loading them
(`load_config`, `from_dict`, `key=value` overrides, YAML) is `hetsearch.utils.typed_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hetsearch.data.config import DataConfig
from hetsearch.errors import ConfigError


def _check_number(section: str, name: str, value, *, low: float, low_ok: bool = True, high: float | None = None,
                  high_ok: bool = True, what: str) -> None:
    """ConfigError naming ``section.name`` unless low <(=) value <(=) high."""
    if value is None:
        return
    bad = value < low if low_ok else value <= low
    if high is not None:
        bad = bad or (value > high if high_ok else value >= high)
    if bad:
        raise ConfigError(f"{section}.{name}: got {value!r}, expected {what}")


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    backbone_args: dict = field(default_factory=dict)
    embedding_dim: int = 128
    head: str = "norm_softmax"       # norm_softmax | cosface | arcface
    head_scale: float = 16.0
    head_margin: Optional[float] = None  # None: the head's default (cosface 0.35, arcface 0.5)
    embedding_layer: str = "head"    # head | backbone (embed the pooled features; head feeds the classifier)
    projection_dim: Optional[int] = None  # projection head width when embedding_layer=backbone
    mean: Optional[list[float]] = None    # input normalisation per channel (None: the backbone's pretrained config)
    std: Optional[list[float]] = None
    pretrained_file: Optional[str] = None  # local timm/torchvision weights for the backbone (never downloaded)

    def validate(self) -> None:
        _check_number("model", "embedding_dim", self.embedding_dim, low=1, what="a positive integer")
        _check_number("model", "head_scale", self.head_scale, low=0, low_ok=False, what="a positive number")
        _check_number("model", "projection_dim", self.projection_dim, low=1, what="a positive integer")


def _check_pair(name: str, value, *, high: float | None) -> None:
    """ConfigError naming ``train.augment.name`` unless value is [min, max] with 0 < min <= max (<= high)."""
    ok = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if ok:
        ok = 0 < value[0] <= value[1] and (high is None or value[1] <= high)
    if not ok:
        bound = f" <= {high:g}" if high is not None else ""
        raise ConfigError(f"train.augment.{name}: got {value!r}, expected [min, max] with 0 < min <= max{bound}")


@dataclass
class AugmentConfig:
    """Training augmentation (`hetsearch.data.augment.BatchAugment`). The photo options (random-resized
    crop, colour jitter) are off by default, which keeps the pad-crop + flip (+ erase) stream as it was."""

    crop_padding: int = 2
    hflip: bool = True
    erase_prob: float = 0.0          # random erasing: probability per sample (0 = off)
    erase_area: list[float] = field(default_factory=lambda: [0.02, 0.25])  # min/max area fraction erased
    resized_crop_scale: Optional[list[float]] = None  # random-resized crop: [min, max] area fraction, e.g.
                                                      # [0.35, 1.0] (null = off)
    resized_crop_ratio: list[float] = field(default_factory=lambda: [0.75, 4 / 3])  # its [min, max] width/height
    brightness: float = 0.0          # colour jitter: per-sample factors uniform in [max(0, 1 - x), 1 + x] (0 = off)
    contrast: float = 0.0
    saturation: float = 0.0

    def validate(self) -> None:
        _check_number("train.augment", "crop_padding", self.crop_padding, low=0, what="an integer >= 0 (0: off)")
        _check_number("train.augment", "erase_prob", self.erase_prob, low=0, high=1, what="a probability in [0, 1]")
        _check_pair("erase_area", self.erase_area, high=1)
        if self.resized_crop_scale is not None:
            _check_pair("resized_crop_scale", self.resized_crop_scale, high=1)
        _check_pair("resized_crop_ratio", self.resized_crop_ratio, high=None)
        for name in ("brightness", "contrast", "saturation"):
            _check_number("train.augment", name, getattr(self, name), low=0, what="a value >= 0 (0: off)")

    def photo_options(self) -> dict:
        """The photo options as `BatchAugment` keyword arguments."""
        scale = self.resized_crop_scale
        return {"resized_crop_scale": tuple(scale) if scale is not None else None,
                "resized_crop_ratio": tuple(self.resized_crop_ratio), "brightness": self.brightness,
                "contrast": self.contrast, "saturation": self.saturation}


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"           # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    task_loss: str = "classification"  # classification | none (label-free: only the compatibility term)
    bn_recalibration_batches: int = 0  # after each epoch, recompute BatchNorm statistics over this many
                                       # augmented training batches (0: off; hetsearch.train.bn_recalibration)
    max_steps_per_epoch: Optional[int] = None  # cap for quick runs and tests
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        _check_number("train", "epochs", self.epochs, low=1, what="a positive integer")
        _check_number("train", "batch_size", self.batch_size, low=1, what="a positive integer")
        _check_number("train", "lr", self.lr, low=0, low_ok=False, what="a positive learning rate, e.g. 0.1")
        _check_number("train", "momentum", self.momentum, low=0, high=1, high_ok=False, what="a value in [0, 1)")
        _check_number("train", "weight_decay", self.weight_decay, low=0, what="a value >= 0")
        _check_number("train", "warmup_epochs", self.warmup_epochs, low=0, what="a value >= 0")
        _check_number("train", "label_smoothing", self.label_smoothing, low=0, high=1, high_ok=False,
                      what="a value in [0, 1)")
        _check_number("train", "max_steps_per_epoch", self.max_steps_per_epoch, low=1, what="a positive integer")


@dataclass
class BankConfig:
    """The gallery embedding bank (hetsearch.compat.bank): φ_g of every training image, K views each."""

    views: int = 4                   # K: view 0 = the image as is, views 1..K-1 = seeded crop+flip views
    view_seed: int = 0               # view v of image i is a pure function of (view_seed, i, v)
    dir: Optional[str] = None        # where banks live (None: <output_dir>/banks, shared by the runs there)
    index: Optional[str] = None      # a gallery index folder of the same images serves as the bank (views: 1)
    index_missing: str = "error"     # training items the index lacks: error | embed (with the gallery model;
                                     # a catalogue refresh, hetsearch.train.refresh)
    match_views: bool = True         # the query sees view v of image i, its target is bank[i, v]; false:
                                     # the trainer's random augmentation against bank[i, 0] (the image as is)
    batch_size: int = 1024           # gallery forward batch while building
    chunk_items: int = 8192          # images per resumable chunk file


@dataclass
class GalleryAwareConfig:
    """Options of the bank methods (contrastive, relational, context, bank_l2; docs/compat.md)."""

    temperature: float = 0.1         # contrastive: τ of the InfoNCE softmax (0.1 beat 0.05 and 0.2 in dev runs, docs/compat.md)
    negatives: int = 4096            # contrastive: sampled bank rows per step (0: in-batch; -1: the full bank)
    hard_negatives: int = 0          # contrastive: + the gallery embeddings of each image's h nearest training images
    anchors: int = 2048              # relational: sampled bank anchors per step
    relational_temperature: float = 0.05  # relational: τ of both similarity distributions
    context: int = 16                # context: k, the gallery's nearest training images of each image
    context_temperature: float = 0.05  # context: τ of both similarity distributions


@dataclass
class CompatConfig:
    """How the model is made compatible with a gallery model (see hetsearch.compat)."""

    method: str = "none"             # none | bct | bct_mean | l2 | distill | contrastive | relational | bank_l2, or parts joined by "+" (bct+l2)
    gallery_model: Optional[str] = None  # path of the gallery model checkpoint
    weight: float = 1.0              # λ of the compatibility term
    term_weights: dict = field(default_factory=dict)  # composite methods: weight of each part (default 1)
    bank: BankConfig = field(default_factory=BankConfig)
    gallery_aware: GalleryAwareConfig = field(default_factory=GalleryAwareConfig)
    # after training: an affine map of the query embedding onto the gallery model's embeddings of the
    # training images (ridge), kept only when held-out training images gain, folded into the head
    # (hetsearch.train.embedding_map; pays on new classes, docs/compat.md "The map without a catalogue")
    linear_map: bool = False

    def validate(self) -> None:
        """What the config alone decides, one ConfigError line each: the method's form (parts joined
        by "+", none alone, no part twice), the weights, the bank's and the bank methods' numbers.
        Whether each part is a registered method, the gallery model file and what its checkpoint
        says (embedding width, input, head) are checked before any data is read by
        `hetsearch.compat.checks.check_compat_config` (the registry lives above this module)."""
        parts = [part.strip() for part in self.method.split("+")]
        if "" in parts:
            raise ConfigError(f"compat.method: got {self.method!r}, expected a method name or names joined by "
                              "'+' (e.g. bct+l2)")
        if len(parts) > 1 and "none" in parts:
            raise ConfigError(f"compat.method: {self.method!r}: none (independent training) is not combined "
                              "with other methods")
        if len(set(parts)) != len(parts):
            raise ConfigError(f"compat.method: {self.method!r} names a method twice; weight a part with "
                              "compat.term_weights instead")
        _check_number("compat", "weight", self.weight, low=0, what="a weight >= 0")
        self._validate_term_weights(parts)
        bank, ga = self.bank, self.gallery_aware
        for name in ("views", "batch_size", "chunk_items"):
            _check_number("compat.bank", name, getattr(bank, name), low=1, what="a positive integer")
        if bank.index_missing not in ("error", "embed"):
            raise ConfigError(f"compat.bank.index_missing: got {bank.index_missing!r}, expected error or embed")
        if bank.index and bank.views != 1 and bank.match_views:
            raise ConfigError(f"compat.bank.views: a gallery index holds one view per image (the image as is); "
                              f"set compat.bank.views=1 with compat.bank.index (got {bank.views})")
        _check_number("compat.gallery_aware", "temperature", ga.temperature, low=0, low_ok=False, what="a value > 0")
        _check_number("compat.gallery_aware", "negatives", ga.negatives, low=-1,
                      what="-1 (full bank), 0 (in-batch) or a positive count")
        _check_number("compat.gallery_aware", "hard_negatives", ga.hard_negatives, low=0, what="a count >= 0")
        _check_number("compat.gallery_aware", "anchors", ga.anchors, low=1, what="a positive count")
        _check_number("compat.gallery_aware", "relational_temperature", ga.relational_temperature, low=0,
                      low_ok=False, what="a value > 0")
        _check_number("compat.gallery_aware", "context", ga.context, low=1, what="a positive count")
        _check_number("compat.gallery_aware", "context_temperature", ga.context_temperature, low=0,
                      low_ok=False, what="a value > 0")

    def _validate_term_weights(self, parts: list[str]) -> None:
        weights = self.term_weights or {}
        stray = sorted(set(weights) - set(parts))
        if stray:
            raise ConfigError(f"compat.term_weights: {', '.join(map(str, stray))} not part of "
                              f"compat.method={self.method!r}")
        bad = {k: v for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            raise ConfigError(f"compat.term_weights: expected numbers, got {bad}")
        if len(parts) == 1 and weights:
            raise ConfigError("compat.term_weights: only for composite methods (e.g. bct+l2); "
                              "a single method is weighted by compat.weight")


@dataclass
class RuntimeConfig:
    device: str = "auto"             # auto | cpu | cuda | cuda:1 | mps
    amp: str = "auto"                # auto (bf16 on CUDA, off on CPU) | off | bf16 | fp16
    channels_last: bool = True
    seed: int = 0
    num_threads: Optional[int] = None
    progress: bool = True
    eval_every: int = 1              # epochs between validation retrieval evaluations (0: never)


@dataclass
class TrainRunConfig:
    """`hetsearch train CONFIG`: one model trained on one data set."""

    name: str = "run"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    compat: CompatConfig = field(default_factory=CompatConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
