"""Model checkpoints: weights + everything needed to rebuild and trust them.

A checkpoint is a plain dict loadable with `torch.load(weights_only=True)`:
`{"format": FORMAT, "state_dict": ..., "meta": {...}}`. The model id is derived from the weights
(a hash), so two files with the same id hold the same model, and query models can name the
gallery model they were trained to be compatible with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hetsearch.errors import CheckpointError
from hetsearch.models.cost import count_flops, count_params
from hetsearch.models.embedding_model import EmbeddingModel, ModelSpec
from hetsearch.utils.io import atomic_torch_save

FORMAT = "hetsearch.model/v1"


@dataclass
class ModelMeta:
    model_id: str
    spec: ModelSpec
    classes: list[str]
    compatible_with: str | None = None   # model id of the gallery model this model was trained to match
    compatibility: str = "none"          # how: none / bct / l2 / distill / ...
    flops: int | None = None             # at batch 1, input_shape, FLOPs = 2 x MACs
    params: int | None = None
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model_id": self.model_id, "spec": self.spec.to_dict(), "classes": list(self.classes),
                "compatible_with": self.compatible_with, "compatibility": self.compatibility,
                "flops": self.flops, "params": self.params, "config": self.config, "extra": self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        """Raises CheckpointError (no path: callers add it) when ``d`` is not a model record."""
        try:
            d = dict(d)
            d["spec"] = ModelSpec.from_dict(d["spec"], d.get("config"))
            return cls(**d)
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"model metadata is not a hetsearch model record ({type(exc).__name__}: "
                                  f"{(str(exc).splitlines() or [''])[0][:200]})") from None


@dataclass
class LoadedModel:
    model: EmbeddingModel
    meta: ModelMeta
    path: Path | None = None


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def make_model_id(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> str:
    """Readable and unique: `<backbone>-d<dim>-<first 12 hex digits of the weights hash>`."""
    return f"{spec.backbone}-d{spec.embedding_dim}-{weights_hash(state_dict)[:12]}"


def save_checkpoint(path: str | Path, model: EmbeddingModel, *, classes: list[str],
                    compatible_with: str | None = None, compatibility: str = "none",
                    config: dict | None = None, extra: dict | None = None) -> ModelMeta:
    model = getattr(model, "module", model)  # unwrap DDP
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = ModelMeta(
        model_id=make_model_id(model.spec, state_dict), spec=model.spec, classes=list(classes),
        compatible_with=compatible_with, compatibility=compatibility,
        flops=count_flops(model, (1, *model.input_shape)), params=count_params(model.backbone)
        + count_params(model.embedding_head), config=config or {}, extra=extra or {})
    atomic_torch_save({"format": FORMAT, "state_dict": state_dict, "meta": meta.to_dict()}, path)
    return meta


def read_checkpoint_file(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's payload, checked; ``mmap``: the weights are mapped, not read (metadata only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # pickle/zip errors vary by corruption; torch's messages run to many lines
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: not a readable hetsearch checkpoint ({exc.__class__.__name__}: {reason}); "
                              "expected a model.pt written by `hetsearch train`") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a hetsearch model checkpoint (expected format {FORMAT!r})")
    try:
        ModelMeta.from_dict(payload.get("meta"))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path}: checkpoint without weights (state_dict)")
    return payload


def read_checkpoint_meta(path: str | Path) -> ModelMeta:
    """A checkpoint's metadata without reading its weights (memory-mapped): cheap enough to check a
    run's config against a gallery model before any data is read."""
    return ModelMeta.from_dict(read_checkpoint_file(path, mmap=True)["meta"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    payload = read_checkpoint_file(path)
    meta = ModelMeta.from_dict(payload["meta"])
    model = EmbeddingModel(meta.spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the recorded architecture: {exc}") from exc
    model.to(map_location).eval()
    return LoadedModel(model=model, meta=meta, path=Path(path))
