"""Loading a query model for search, whatever its file: ``load_query_encoder(path, runtime)``.

A hetsearch checkpoint (``.pt`` from training) runs in eager PyTorch (or, with ``runtime="onnx"``,
is exported on the fly, with the parity check, and run by ONNX Runtime); an ``.onnx`` or
TorchScript file written by ``hetsearch export`` runs as such. The encoders themselves are
`hetsearch.export.encoders` (import them from there).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

from hetsearch.errors import CheckpointError, HetsearchError
from hetsearch.export import exporter
from hetsearch.export.encoders import OnnxEncoder, QueryEncoder, TorchEncoder, is_torchscript_file, load_torchscript
from hetsearch.models.checkpoint import load_checkpoint

__all__ = ["RUNTIMES", "load_query_encoder"]

RUNTIMES = ("auto", "torch", "onnx", "torchscript")


def load_query_encoder(path: str | Path, runtime: str = "auto", threads: Optional[int] = None) -> QueryEncoder:
    """The query model at ``path`` behind the `QueryEncoder` interface (see the module doc)."""
    path = Path(path)
    if runtime not in RUNTIMES:
        raise HetsearchError(f"--runtime: got {runtime!r}, expected one of {', '.join(RUNTIMES)}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    if path.suffix.lower() == ".onnx":
        if runtime not in ("auto", "onnx"):
            raise HetsearchError(f"{path}: an ONNX file runs with --runtime onnx, not {runtime}")
        return OnnxEncoder(path, threads=threads)
    if is_torchscript_file(path):
        if runtime not in ("auto", "torchscript"):
            raise HetsearchError(f"{path}: a TorchScript file runs with --runtime torchscript, not {runtime}")
        return load_torchscript(path)
    if runtime == "torchscript":
        raise HetsearchError(f"{path}: --runtime torchscript needs a file written by "
                             "`hetsearch export --format torchscript`")
    loaded = load_checkpoint(path)
    if runtime == "onnx":
        with tempfile.TemporaryDirectory(prefix="hetsearch-onnx-") as folder:
            result = exporter.export_model(loaded, "onnx", Path(folder) / f"{path.stem}.onnx")
            encoder = OnnxEncoder(Path(result["path"]), threads=threads)  # the session holds the model
        encoder.path = path
        encoder.parity = result["parity"]
        return encoder
    return TorchEncoder(loaded.model, loaded.meta, path)
