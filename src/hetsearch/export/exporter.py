"""Export a query model to ONNX or TorchScript with its contract metadata, checked for parity.

Every export runs the parity check before the file is put in place: the exported network and the
eager model embed a sample of queries (one at a time, as the server does) and a sample gallery
(in one batch, exercising the dynamic batch axis); the export passes when the largest absolute
difference of embeddings is <= ``atol`` (1e-4) and every query's top-10 over the sample gallery is
identical (positions may only differ between gallery items whose scores tie within 2 x the
observed difference). The sample comes from a given index (its thumbnails as queries, its stored
gallery embeddings as the gallery), else from the model's own data set, else synthetic images.

The contract metadata (model id, compatible_with, embedding dim, input size and channels, the
model's preprocessing (``preprocessing``: size, channels, mean, std, resize mode, background, as
JSON), and the full model meta as JSON) goes into the ONNX model's ``metadata_props`` / the
TorchScript file's extra files, and into a sidecar ``<file>.json`` together with the parity report.
Export reads no index: a caller that wants the parity check on an index's images reads them
(`hetsearch.index.gallery.read_stored`) and passes them as an `IndexSample`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from hetsearch.data import DataConfig, load_source
from hetsearch.errors import HetsearchError
from hetsearch.eval.ranking import top_k
from hetsearch.utils.typed_config import from_dict
from hetsearch.export.encoders import (META_KEY, TORCHSCRIPT_META_FILE, ExportError, OnnxEncoder, QueryEncoder,
                                       TorchEncoder, load_torchscript)
from hetsearch.models.checkpoint import LoadedModel, load_checkpoint
from hetsearch.utils.io import atomic_write_json

FORMATS = ("onnx", "torchscript")
EXPORTERS = ("dynamo", "legacy")
DEFAULT_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
ONNX_INPUT, ONNX_OUTPUT = "images", "embeddings"


def contract_metadata(loaded: LoadedModel) -> dict[str, str]:
    meta = loaded.meta
    return {"model_id": meta.model_id, "compatible_with": meta.compatible_with or "",
            "compatibility": meta.compatibility, "embedding_dim": str(meta.spec.embedding_dim),
            "image_size": str(meta.spec.image_size), "in_chans": str(meta.spec.in_chans),
            "resize": meta.spec.resize, "input": "float32 N x C x H x W in [0, 1]",
            "preprocessing": json.dumps(meta.spec.preprocessing.to_dict(), sort_keys=True),
            "output": "float32 N x D, L2-normalised", "flops": str(meta.flops or ""),
            META_KEY: json.dumps(meta.to_dict(), sort_keys=True)}


# ---------------------------------------------------------------- writers


def _quiet():
    """torch.onnx prints progress lines and deprecation warnings; keep the CLI output readable."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def write_onnx(loaded: LoadedModel, path: Path, exporter: str = "dynamo", opset: int = 18) -> str:
    """Write the ONNX file (dynamic batch axis) with contract metadata; returns the exporter used."""
    import onnx

    model = loaded.model.eval()
    example = torch.rand(2, *model.input_shape)
    errors = []
    for name in ([exporter] + [e for e in EXPORTERS if e != exporter]):
        try:
            with _quiet():
                if name == "dynamo":
                    torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset,
                                      input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1 << 20)}},
                                      external_data=False, verbose=False)
                else:
                    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                                      input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                      dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}})
            used = name
            break
        except Exception as exc:  # exporters fail with many exception types
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    else:
        raise ExportError(f"ONNX export of {loaded.meta.model_id} failed: " + " | ".join(errors))
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in contract_metadata(loaded).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "hetsearch"
    proto.doc_string = f"hetsearch query model {loaded.meta.model_id}"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return used


def write_torchscript(loaded: LoadedModel, path: Path) -> str:
    model = loaded.model.eval()
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(model, torch.rand(2, *model.input_shape))
    extra = {TORCHSCRIPT_META_FILE: json.dumps(loaded.meta.to_dict(), sort_keys=True)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still the TorchScript API
        torch.jit.save(traced, str(path), _extra_files=extra)
    return "torch.jit.trace"


# ---------------------------------------------------------------- parity


def _synthetic_images(n: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Smooth random images (low-resolution noise upsampled), closer to photos than white noise."""
    generator = torch.Generator().manual_seed(seed)
    c, h, w = shape
    low = torch.rand(n, c, max(2, h // 4), max(2, w // 4), generator=generator)
    images = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    images = images + 0.1 * torch.rand(n, c, h, w, generator=generator)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class IndexSample:
    """An index's stored images and gallery embeddings for the parity check (e.g. from
    `hetsearch.index.gallery.read_stored(folder)`): its images as queries, its embeddings as the gallery."""

    thumbnails: np.ndarray  # uint8 (N, C, H, W)
    vectors: np.ndarray     # float32 (N, D)
    name: str = "index"


def parity_sample(loaded: LoadedModel, *, n_queries: int = 64, n_gallery: int = 512, seed: int = 0,
                  data: str = "auto", index: Optional[IndexSample] = None):
    """(query images uint8, gallery images uint8 or None, gallery embeddings or None, description)."""
    shape = tuple(loaded.model.input_shape)
    rng = np.random.default_rng(seed)
    if index is not None:
        vectors, thumbs = index.vectors, index.thumbnails
        if tuple(thumbs.shape[1:]) != shape:
            raise ExportError(f"{index.name}: index images are {tuple(thumbs.shape[1:])}, the model takes {shape}")
        q = np.sort(rng.choice(len(thumbs), min(n_queries, len(thumbs)), replace=False))
        g = np.sort(rng.choice(len(vectors), min(n_gallery, len(vectors)), replace=False))
        return (torch.from_numpy(np.ascontiguousarray(thumbs[q])), None, vectors[g],
                f"index {index.name}: {len(q)} items as queries, {len(g)} stored gallery embeddings")
    if data == "auto" and loaded.meta.config.get("data"):
        try:
            cfg = from_dict(DataConfig, dict(loaded.meta.config["data"]), "data")
            splits = load_source(cfg)
            images = splits.get("test", next(iter(splits.values()))).images
            if tuple(images.shape[1:]) == shape and len(images) >= 2:
                pick = rng.choice(len(images), min(n_queries + n_gallery, len(images)), replace=False)
                nq = min(n_queries, len(pick) // 2)
                return (images[np.sort(pick[:nq])], images[np.sort(pick[nq:])], None,
                        f"{cfg.source} data: {nq} queries, {len(pick) - nq} gallery images")
        except (HetsearchError, TypeError, KeyError, ValueError):
            pass  # fall back to synthetic images
    images = _synthetic_images(n_queries + n_gallery, shape, seed)
    return (images[:n_queries], images[n_queries:], None,
            f"synthetic images: {n_queries} queries, {n_gallery} gallery images")


def _topk(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery indices, scores) of each query's top k, scored in float64 (`hetsearch.eval.ranking`)."""
    scores, order = top_k(q.astype(np.float64) @ g.astype(np.float64).T, k)
    return order, scores


def parity_check(reference: QueryEncoder, candidate: QueryEncoder, queries: torch.Tensor,
                 gallery_images: Optional[torch.Tensor] = None, gallery_embeddings: Optional[np.ndarray] = None,
                 *, k: int = 10, atol: float = 1e-4, batch1_queries: int = 16) -> dict:
    """Compare two encoders of the same model (see the module doc); returns the report, with
    ``passed``."""
    q = queries.numpy()
    ref_q = reference.embed(q)
    nb1 = min(batch1_queries, len(q))
    cand_q = np.concatenate([candidate.embed(q[i:i + 1]) for i in range(nb1)]
                            + ([candidate.embed(q[nb1:])] if nb1 < len(q) else []))
    max_abs = float(np.abs(ref_q - cand_q).max())
    if gallery_embeddings is None:
        g = gallery_images.numpy()
        gallery_embeddings = reference.embed(g)
        max_abs = max(max_abs, float(np.abs(gallery_embeddings - candidate.embed(g)).max()))
    k = min(k, len(gallery_embeddings))
    ref_ids, ref_scores = _topk(ref_q, gallery_embeddings, k)
    cand_ids, _ = _topk(cand_q, gallery_embeddings, k)
    identical = (ref_ids == cand_ids).all(axis=1)
    # A differing row still counts when each position holds an item whose reference score ties
    # (within 2 x the observed difference) with the reference item at that position.
    tie_tol = 2 * max_abs + 1e-7
    equivalent = identical.copy()
    for row in np.flatnonzero(~identical):
        cand_ref_scores = ref_q[row].astype(np.float64) @ gallery_embeddings[cand_ids[row]].astype(np.float64).T
        equivalent[row] = bool(np.all(np.abs(cand_ref_scores - ref_scores[row]) <= tie_tol))
    passed = bool(max_abs <= atol and equivalent.all())
    return {"max_abs_diff": max_abs, "atol": atol, "k": k, "queries": int(len(q)),
            "batch1_queries": int(nb1), "gallery": int(len(gallery_embeddings)),
            "top10_identical_fraction": float(identical.mean()), "top10_identical": bool(equivalent.all()),
            "passed": passed}


# ---------------------------------------------------------------- the export command


def default_output(checkpoint: Path, fmt: str) -> Path:
    return checkpoint.with_name(checkpoint.stem + DEFAULT_SUFFIX[fmt])


def export_model(model: LoadedModel | str | Path, fmt: str, out: Optional[str | Path] = None, *,
                 exporter: str = "dynamo", parity_data: str = "auto", index: Optional[IndexSample] = None,
                 n_queries: int = 64, n_gallery: int = 512, atol: float = 1e-4, seed: int = 0) -> dict:
    """Export, check parity, then move the file into place and write the sidecar JSON.

    Raises ExportError (and leaves nothing at ``out``) when the parity check fails."""
    loaded = model if isinstance(model, LoadedModel) else load_checkpoint(model)
    if fmt not in FORMATS:
        raise HetsearchError(f"--format: got {fmt!r}, expected one of {', '.join(FORMATS)}")
    if exporter not in EXPORTERS:
        raise HetsearchError(f"--exporter: got {exporter!r}, expected one of {', '.join(EXPORTERS)}")
    if out is None:
        if loaded.path is None:
            raise HetsearchError("export: give an output path")
        out = default_output(loaded.path, fmt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if fmt == "onnx":
            used = write_onnx(loaded, tmp, exporter=exporter)
            candidate: QueryEncoder = OnnxEncoder(tmp, threads=1)
        else:
            used = write_torchscript(loaded, tmp)
            candidate = load_torchscript(tmp)
        if candidate.meta.model_id != loaded.meta.model_id:
            raise ExportError(f"{out}: exported metadata names {candidate.meta.model_id}, expected {loaded.meta.model_id}")
        queries, gallery_images, gallery_embeddings, sample = parity_sample(
            loaded, n_queries=n_queries, n_gallery=n_gallery, seed=seed, data=parity_data, index=index)
        parity = parity_check(TorchEncoder(loaded.model, loaded.meta), candidate, queries, gallery_images,
                              gallery_embeddings, atol=atol)
        parity["sample"] = sample
        if not parity["passed"]:
            raise ExportError(
                f"{fmt} export of {loaded.meta.model_id} failed the parity check: max |diff| = "
                f"{parity['max_abs_diff']:.2e} (limit {atol:.0e}), identical top-{parity['k']} for "
                f"{parity['top10_identical_fraction']:.1%} of queries; nothing written to {out}")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    report = {"path": str(out), "format": fmt, "exporter": used, "model_id": loaded.meta.model_id,
              "compatible_with": loaded.meta.compatible_with, "embedding_dim": loaded.meta.spec.embedding_dim,
              "image_size": loaded.meta.spec.image_size, "in_chans": loaded.meta.spec.in_chans,
              "resize": loaded.meta.spec.resize, "preprocessing": loaded.meta.spec.preprocessing.to_dict(),
              "flops": loaded.meta.flops,
              "source_checkpoint": str(loaded.path) if loaded.path else None,
              "torch_version": torch.__version__, "parity": parity,
              "meta": loaded.meta.to_dict()}
    atomic_write_json(out.with_name(out.name + ".json"), report)
    return report
