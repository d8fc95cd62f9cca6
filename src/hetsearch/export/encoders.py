"""Query encoders: one interface over an eager model, an ONNX Runtime session and TorchScript.

Every encoder carries the model's `ModelMeta` (from the checkpoint, or from the contract metadata
embedded at export: ``metadata_props[META_KEY]`` in ONNX, the extra file ``TORCHSCRIPT_META_FILE``
in TorchScript), so the model contract is checked the same way whatever runs the network. Encoders
take uint8 images (N, C, H, W) and return L2-normalised float32 embeddings (N, D).
`hetsearch.export.runtime.load_query_encoder` picks the encoder for a file.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hetsearch.data.preprocessing import Preprocessing
from hetsearch.errors import CheckpointError, HetsearchError
from hetsearch.models.checkpoint import ModelMeta

META_KEY = "hetsearch_meta"
TORCHSCRIPT_META_FILE = "hetsearch_meta.json"


class ExportError(HetsearchError):
    """An exported model is missing, unreadable, lacks its contract metadata or fails parity."""


class QueryEncoder:
    runtime = "abstract"

    def __init__(self, meta: ModelMeta, path: Optional[Path] = None):
        self.meta = meta
        self.path = path

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.meta.spec.in_chans, self.meta.spec.image_size, self.meta.spec.image_size)

    @property
    def preprocessing(self) -> Preprocessing:
        """How an image becomes this model's input (decode queries with ``preprocessing.decode_spec()``)."""
        return self.meta.spec.preprocessing

    def embed(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.embed(images)

    def describe(self) -> dict:
        return {"model_id": self.meta.model_id, "backbone": self.meta.spec.backbone,
                "embedding_dim": self.meta.spec.embedding_dim,
                "mflops": round(self.meta.flops / 1e6, 3) if self.meta.flops is not None else None,
                "params": self.meta.params, "compatible_with": self.meta.compatible_with,
                "compatibility": self.meta.compatibility, "runtime": self.runtime,
                "input": "x".join(map(str, self.input_shape))}


def _meta_from_json(text, path) -> ModelMeta:
    """The contract metadata embedded in an export; ExportError naming the file when it is damaged."""
    try:
        return ModelMeta.from_dict(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{path}: its hetsearch contract metadata is not valid JSON ({exc}); export it again "
                          "with `hetsearch export`") from None
    except CheckpointError as exc:
        raise ExportError(f"{path}: {exc}; export it again with `hetsearch export`") from None


def _as_uint8(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {images.shape}")
    return images


class TorchEncoder(QueryEncoder):
    runtime = "torch"

    def __init__(self, model: torch.nn.Module, meta: ModelMeta, path: Optional[Path] = None):
        super().__init__(meta, path)
        self.model = model.eval()

    def embed(self, images) -> np.ndarray:
        x = torch.from_numpy(_as_uint8(images).astype(np.float32)).div_(255)  # astype copies: writable
        with torch.inference_mode():
            return self.model(x).numpy()


class TorchScriptEncoder(TorchEncoder):
    runtime = "torchscript"


class OnnxEncoder(QueryEncoder):
    runtime = "onnx"

    def __init__(self, path: Path, threads: Optional[int] = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several exception types for bad files
            raise ExportError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise ExportError(f"{path}: ONNX model without hetsearch contract metadata (metadata_props "
                              f"{META_KEY!r}); export it with `hetsearch export --format onnx`")
        super().__init__(_meta_from_json(props[META_KEY], path), Path(path))
        self.input_name = self.session.get_inputs()[0].name

    def embed(self, images) -> np.ndarray:
        x = _as_uint8(images).astype(np.float32) / np.float32(255)
        return self.session.run(None, {self.input_name: x})[0]


def is_torchscript_file(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"/{TORCHSCRIPT_META_FILE}") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_torchscript(path: Path) -> TorchScriptEncoder:
    extra = {TORCHSCRIPT_META_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still works
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch.jit raises RuntimeError and others for bad files
        raise ExportError(f"{path}: not a loadable TorchScript file ({type(exc).__name__}: {exc})") from None
    if not extra[TORCHSCRIPT_META_FILE]:
        raise ExportError(f"{path}: TorchScript file without hetsearch contract metadata "
                          f"({TORCHSCRIPT_META_FILE}); export it with `hetsearch export --format torchscript`")
    meta = _meta_from_json(extra[TORCHSCRIPT_META_FILE], path)
    return TorchScriptEncoder(module, meta, Path(path))
