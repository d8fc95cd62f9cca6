"""One-call evaluation: retrieval + verification metrics, from embeddings or from two models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hetsearch.eval._inputs import check_exclude_self
from hetsearch.eval.embed import embed
from hetsearch.eval.knn import KnnFactory
from hetsearch.eval.metrics import retrieval_metrics
from hetsearch.eval.verification import DEFAULT_FARS, verification_metrics

__all__ = ["evaluate_embeddings", "evaluate_folders", "evaluate_index", "evaluate_pair", "read_labelled_folders"]


def evaluate_embeddings(
    q_emb: Any,
    q_labels: Any,
    g_emb: Any,
    g_labels: Any,
    exclude_self: bool = False,
    ks: Sequence[int] = (1, 5, 10),
    fars: Sequence[float] = DEFAULT_FARS,
    knn: KnnFactory | None = None,
    max_genuine_pairs: int = 1_000_000,
    max_impostor_pairs: int = 1_000_000,
    seed: int = 0,
) -> dict[str, float | int]:
    """``retrieval_metrics`` and ``verification_metrics`` merged into one flat dict.

    Keys: ``recall_at_{k}``, ``precision_at_{k}``, ``map``, ``map_at_r``, ``tar_at_far_{f}``,
    ``threshold_at_far_{f}``, ``num_queries``, ``num_gallery``, ``num_queries_without_relevant``,
    ``num_genuine_pairs``, ``num_impostor_pairs``.
    """
    result = retrieval_metrics(
        q_emb, q_labels, g_emb, g_labels, ks=ks, exclude_self=exclude_self, knn=knn
    )
    result.update(
        verification_metrics(
            q_emb, q_labels, g_emb, g_labels, fars=fars, exclude_self=exclude_self,
            max_genuine_pairs=max_genuine_pairs, max_impostor_pairs=max_impostor_pairs,
            seed=seed,
        )
    )
    return result


def evaluate_pair(
    query_model: nn.Module,
    gallery_model: nn.Module,
    query_images: Any,
    query_labels: Any,
    gallery_images: Any,
    gallery_labels: Any,
    exclude_self: bool = False,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    ks: Sequence[int] = (1, 5, 10),
    fars: Sequence[float] = DEFAULT_FARS,
    knn: KnnFactory | None = None,
    seed: int = 0,
) -> dict[str, float | int]:
    """M(query_model, gallery_model): embed the queries with ``query_model`` and the gallery with
    ``gallery_model`` (uint8 ``N x C x H x W`` images), then ``evaluate_embeddings``.

    ``exclude_self=True`` means query i and gallery i are the same *item* (homogeneous protocol:
    each query against the rest of its split); it applies whether or not the two models are the
    same. When they are the same model and the same images, the images are embedded once.
    This function holds no checkpoint/compatibility logic: callers check the model contract.
    """
    if exclude_self:
        check_exclude_self(len(query_images), len(gallery_images))
    query_emb = embed(query_model, query_images, batch_size=batch_size, device=device)
    if gallery_model is query_model and _same_images(query_images, gallery_images):
        gallery_emb = query_emb
    else:
        gallery_emb = embed(gallery_model, gallery_images, batch_size=batch_size, device=device)
    return evaluate_embeddings(
        query_emb, query_labels, gallery_emb, gallery_labels, exclude_self=exclude_self, ks=ks,
        fars=fars, knn=knn, seed=seed,
    )


def _same_images(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.device == b.device and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return False


# ---------------------------------------------------------------------------- folders and indexes

def read_labelled_folders(folders: Sequence[str | Path], decode, num_workers: int | None = None) -> list:
    """Each ``DIR/CLASS/*`` folder as an ImageSet decoded with ``decode`` (a `DecodeSpec`, or one per
    folder); all share one class list (the union of their class folder names), so labels compare
    by name."""
    from hetsearch.data.fileset import FileSet
    from hetsearch.data.files import class_sort_key, list_class_folders
    from hetsearch.errors import DataError

    decodes = list(decode) if isinstance(decode, (list, tuple)) else [decode] * len(folders)
    listed = []
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (expected a labelled folder DIR/CLASS/IMAGE)")
        per_class = list_class_folders(folder)
        if not per_class:
            raise DataError(f"{folder}: no class sub-folders with images (expected DIR/CLASS/IMAGE)")
        listed.append(per_class)
    classes = sorted({c for per_class in listed for c, _ in per_class}, key=class_sort_key)
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for folder, per_class, spec in zip(folders, listed, decodes):
        paths = [str(p) for _, files in per_class for p in files]
        labels = torch.tensor([index[c] for c, files in per_class for _ in files], dtype=torch.int64)
        files = FileSet(paths=paths, labels=labels, classes=classes, decode=spec)
        out.append(files.materialize(num_workers=num_workers if len(files) >= 2048 else 0, what=str(folder)))
    return out


def _decode_spec(meta, channels: int | None = None, image_size: int | None = None):
    from hetsearch.data import DataConfig
    from hetsearch.data.fileset import DecodeSpec
    from hetsearch.index.images import resize_mode_of
    from hetsearch.index.items import background_of

    return DecodeSpec(channels=channels or meta.spec.in_chans, image_size=image_size or meta.spec.image_size,
                      resize=resize_mode_of(meta), background=DataConfig(background=background_of(meta)).background_rgb())


def _same_folder(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def evaluate_folders(query_model: str | Path, gallery_model: str | Path, queries: str | Path, gallery: str | Path,
                     device: str = "auto") -> dict:
    """M(query model, gallery model) with queries from a labelled folder ``queries/CLASS/*`` and the
    gallery from ``gallery/CLASS/*`` embedded by the gallery model. Labels match by class name; the
    same folder on both sides excludes each query from its own results."""
    from hetsearch.models.contract import check_pair
    from hetsearch.models import load_checkpoint
    from hetsearch.utils.device import resolve_device

    g = load_checkpoint(gallery_model)
    q = g if _same_folder(query_model, gallery_model) else load_checkpoint(query_model)
    warnings = check_pair(q.meta, g.meta)
    exclude_self = _same_folder(queries, gallery)
    q_spec, g_spec = _decode_spec(q.meta), _decode_spec(g.meta)
    if exclude_self and q_spec == g_spec:
        q_set = g_set = read_labelled_folders([queries], q_spec)[0]
    else:
        q_set, g_set = read_labelled_folders([queries, gallery], [q_spec, g_spec])
    dev = resolve_device(device)
    metrics = evaluate_pair(q.model.to(dev), g.model.to(dev), q_set.images, q_set.labels.numpy(), g_set.images,
                            g_set.labels.numpy(), exclude_self=exclude_self, device=dev)
    protocol = {"queries": str(queries), "gallery": str(gallery), "exclude_self": exclude_self,
                "query_classes": len(q_set.class_counts()), "gallery_classes": len(g_set.class_counts()),
                "counts": {"query": len(q_set), "gallery": len(g_set)}}
    return {"query_model": q.meta.model_id, "gallery_model": g.meta.model_id,
            "query_mflops": (q.meta.flops or 0) / 1e6, "gallery_mflops": (g.meta.flops or 0) / 1e6,
            "metrics": metrics, "warnings": warnings, "protocol": protocol}


def evaluate_index(query_model: str | Path, index: str | Path, queries: str | Path, *, runtime: str = "auto",
                   allow_incompatible: bool = False) -> dict:
    """M(query model, the index's gallery model) with queries from ``queries/CLASS/*`` against the
    embeddings an index stores (nothing is re-embedded; the model contract is checked as for
    `hetsearch query`). Gallery labels are the items' labels; unlabelled items are never relevant."""
    from hetsearch.data.fileset import DecodeSpec
    from hetsearch.export.runtime import load_query_encoder
    from hetsearch.index.gallery import load_vectors, open_index

    encoder = load_query_encoder(query_model, runtime=runtime)
    opened = open_index(index, query_meta=encoder.meta, allow_incompatible=allow_incompatible)
    try:
        item_labels = opened.all_labels()
        gallery_id = opened.gallery_model_id
        warnings = list(opened.warnings)
    finally:
        opened.close()
    _, vectors = load_vectors(index)
    c, size, _ = encoder.input_shape
    spec = _decode_spec(encoder.meta, c, size)
    q_set, = read_labelled_folders([queries], DecodeSpec(c, size, encoder.resize, spec.background, "fail"))
    names = {name: i for i, name in enumerate(q_set.classes)}  # gallery-only labels get new ids
    g_labels = np.array([names.setdefault(lab, len(names)) if lab is not None else -1 for lab in item_labels],
                        dtype=np.int64)
    q_emb = np.concatenate([encoder.embed(q_set.images[i:i + 256].numpy()) for i in range(0, len(q_set), 256)])
    metrics = evaluate_embeddings(q_emb, q_set.labels.numpy(), vectors, g_labels)
    protocol = {"queries": str(queries), "index": str(index), "exclude_self": False,
                "gallery_items_without_label": int((g_labels < 0).sum()),
                "counts": {"query": len(q_set), "gallery": int(len(vectors))}}
    return {"query_model": encoder.meta.model_id, "gallery_model": gallery_id,
            "query_mflops": (encoder.meta.flops or 0) / 1e6, "metrics": metrics, "warnings": warnings,
            "protocol": protocol}


def folder_splits(meta, queries: str | Path, gallery: str | Path | None = None, index: str | Path | None = None):
    """A `Splits` whose query set is ``queries/CLASS/*`` and whose gallery is ``gallery/CLASS/*`` or
    the images an index stores (its thumbnails, as its gallery model saw them), decoded as the model
    ``meta`` (the grid's first model) sees images; train/val are empty. For `hetsearch grid`."""
    from hetsearch.data.imageset import ImageSet
    from hetsearch.data.splits import Splits
    from hetsearch.data.transforms import fit_tensor_images
    from hetsearch.index.gallery import open_index

    spec = _decode_spec(meta)
    if index is None:
        exclude_self = _same_folder(queries, gallery)
        sets = read_labelled_folders([queries] if exclude_self else [queries, gallery], spec)
        q_set, g_set = sets[0], sets[-1]
        where = {"queries": str(queries), "gallery": str(gallery)}
    else:
        exclude_self = False
        q_set = read_labelled_folders([queries], spec)[0]
        opened = open_index(index)
        try:
            item_labels, ids = opened.all_labels(), [int(i) for i in opened.ids]
            thumbnails = torch.from_numpy(np.array(opened.thumbnails))
        finally:
            opened.close()
        classes = list(q_set.classes)
        for label in item_labels:
            if label is not None and label not in classes:
                classes.append(label)
        lookup = {name: i for i, name in enumerate(classes)}
        q_set = ImageSet(images=q_set.images, labels=q_set.labels, classes=classes, sources=q_set.sources)
        g_set = ImageSet(images=fit_tensor_images(thumbnails, spec.channels, spec.image_size),
                         labels=torch.tensor([lookup[lab] if lab is not None else -1 for lab in item_labels],
                                             dtype=torch.int64),
                         classes=classes, sources=[f"{index}#{i}" for i in ids])
        where = {"queries": str(queries), "index": str(index), "gallery": "the index's stored images"}
    empty = q_set.subset(slice(0, 0))
    present = sorted(set(q_set.labels.tolist()))
    protocol = {"protocol": "folders", **where, "exclude_self": exclude_self,
                "counts": {"query": len(q_set), "gallery": len(g_set)}}
    return Splits(train=empty, val=empty, query=q_set, gallery=g_set, classes=list(q_set.classes), train_classes=[],
                  test_classes=present, exclude_self=exclude_self, protocol=protocol)
