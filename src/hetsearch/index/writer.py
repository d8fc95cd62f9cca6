"""Writing an index folder: build, add, remove, rebuild.

Each operation runs inside `hetsearch.index.storage.write_transaction` (the new version is written
in a temporary folder, then swapped in), refuses to update an index whose files are damaged, and
ends with `manifest.record_change` + `manifest.write_manifest`. Gallery embeddings are computed
once, when items enter the index: remove and rebuild reuse the stored vectors.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from hetsearch.errors import CompatibilityError, HetsearchError
from hetsearch.eval.embed import embed
from hetsearch.index import faiss_index, store
from hetsearch.index.check import FAISS_NAME, check_folder, raise_first
from hetsearch.index.items import GalleryItems
from hetsearch.index.manifest import new_manifest, read_manifest, record_change, write_manifest
from hetsearch.index.storage import IndexWriteError, pause_point, recover, write_transaction
from hetsearch.models.checkpoint import LoadedModel


def embed_images(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 256,
                 device: str | torch.device | None = None, progress: bool = False) -> np.ndarray:
    """float32 (N, D) embeddings of uint8 (N, C, H, W) images (`hetsearch.eval.embed`)."""
    if len(images) == 0:
        return np.zeros((0, model.embedding_dim), dtype=np.float32)
    return np.ascontiguousarray(embed(model, images, batch_size=batch_size, device=device, progress=progress),
                                dtype=np.float32)


def _check_items(items: GalleryItems, gallery: LoadedModel) -> None:
    expected = tuple(gallery.model.input_shape)
    if tuple(items.images.shape[1:]) != expected:
        raise HetsearchError(f"gallery images have shape {tuple(items.images.shape[1:])}, but gallery model "
                             f"{gallery.meta.model_id} takes {expected}")
    if len(items) == 0:
        raise HetsearchError("no gallery images to index")


def _checked(folder: Path, tmp: Path, manifest: dict, *, skip: tuple[str, ...] = ()) -> None:
    """Refuse to update an index whose files are damaged (one line naming the file)."""
    raise_first(folder, [p for p in check_folder(tmp, manifest, display=folder) if p.file not in skip])


def _insert(tmp: Path, ids: np.ndarray, items: GalleryItems) -> None:
    store.insert_items(tmp, ids.tolist(), items.sources, items.labels, items.fields)


def check_new_index_path(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, to build over an existing index (unless ``overwrite``) or a file."""
    recover(out)
    if out.exists() and not overwrite:
        raise IndexWriteError(f"{out}: already exists (use --overwrite to replace it, or `hetsearch index add` "
                              "to add items to it)")
    if out.exists() and not out.is_dir():
        raise IndexWriteError(f"{out}: exists and is not a folder")


def build_index(out: str | Path, gallery: LoadedModel, items: GalleryItems, *, index_type: str = "flat",
                params: dict[str, Any] | None = None, overwrite: bool = False, batch_size: int = 256,
                device: str | torch.device | None = None, progress: bool = False,
                vectors: np.ndarray | None = None) -> dict:
    """Embed ``items`` with the gallery model and write a new index folder at ``out``.

    ``vectors`` may pass precomputed gallery embeddings (benchmarks); they must come from
    ``gallery``. Returns the manifest.
    """
    out = Path(out)
    check_new_index_path(out, overwrite)
    _check_items(items, gallery)
    resolved = faiss_index.resolve_params(index_type, params, len(items))
    started = time.perf_counter()
    if vectors is None:
        vectors = embed_images(gallery.model, items.images, batch_size=batch_size, device=device,
                               progress=progress)
    embed_s = time.perf_counter() - started
    ids = np.arange(len(items), dtype=np.int64)
    with write_transaction(out, copy_existing=False) as tmp:
        index = faiss_index.build_faiss_index(index_type, resolved, vectors, ids)
        faiss_index.write_index(index, tmp / FAISS_NAME)
        _insert(tmp, ids, items)
        store.save_arrays(tmp, ids, vectors, items.images.numpy())
        pause_point("writing")
        manifest = new_manifest(
            gallery, embedding_dim=int(vectors.shape[1]), index_type=index_type, params=resolved,
            item_count=len(items), image_shape=items.images.shape[1:],
            build_entry={"op": "build", "count": len(items), "origin": items.origin, "at": None,
                         "embed_s": round(embed_s, 3), "skipped": len(items.skipped)})
        write_manifest(tmp, manifest, items.labels)
    return manifest


def _check_same_gallery(manifest: dict, gallery: LoadedModel, folder: Path) -> None:
    if gallery.meta.model_id != manifest["gallery_model_id"]:
        raise CompatibilityError(
            f"{folder} holds embeddings of gallery model {manifest['gallery_model_id']}, but the given gallery "
            f"model is {gallery.meta.model_id}; new items must be embedded by the same model (pass "
            f"--gallery-model {manifest.get('gallery_model_path') or '<that checkpoint>'}, or build a new index)")


def _subset(items: GalleryItems, keep: list[int]) -> GalleryItems:
    return GalleryItems(images=items.images[keep], sources=[items.sources[i] for i in keep],
                        labels=[items.labels[i] for i in keep], fields=[items.fields[i] for i in keep],
                        skipped=items.skipped, origin=items.origin)


def _drop_known(folder: Path, tmp: Path, items: GalleryItems, vectors: np.ndarray) -> tuple[GalleryItems, np.ndarray]:
    """``items`` (and their vectors) without those whose source the index holds already."""
    known = store.known_sources(tmp)
    keep = [i for i, source in enumerate(items.sources) if source not in known]
    duplicates = [source for source in items.sources if source in known]
    if not duplicates:
        return items, vectors
    if not keep:
        raise HetsearchError(f"{folder}: all {len(items)} item(s) are already in the index (same "
                             f"sources, e.g. {duplicates[0]}); nothing added (--allow-duplicates "
                             "adds them again)")
    return _subset(items, keep), vectors[keep]


def add_items(index_dir: str | Path, gallery: LoadedModel, items: GalleryItems, *, batch_size: int = 256,
              device: str | torch.device | None = None, progress: bool = False,
              allow_duplicates: bool = False) -> tuple[dict, list[int]]:
    """Embed and add ``items``; returns (manifest, the new item ids). Items whose source is already in
    the index are skipped (listed in ``manifest["history"][-1]["duplicates"]``) unless
    ``allow_duplicates``; when every item is a duplicate, HetsearchError."""
    folder = Path(index_dir)
    recover(folder)
    _check_same_gallery(read_manifest(folder), gallery, folder)
    _check_items(items, gallery)
    vectors = embed_images(gallery.model, items.images, batch_size=batch_size, device=device, progress=progress)
    total = len(items)
    with write_transaction(folder, copy_existing=True) as tmp:
        manifest = read_manifest(tmp, folder)  # the version being replaced, read under the write lock
        _check_same_gallery(manifest, gallery, folder)
        _checked(folder, tmp, manifest)
        if not allow_duplicates:
            items, vectors = _drop_known(folder, tmp, items, vectors)
        start = int(manifest["next_id"])
        new_ids = np.arange(start, start + len(items), dtype=np.int64)
        index = faiss_index.read_index(tmp / FAISS_NAME)
        index.add_with_ids(vectors, new_ids)
        faiss_index.write_index(index, tmp / FAISS_NAME)
        _insert(tmp, new_ids, items)
        old_ids, old_vectors, old_thumbnails = store.load_arrays(tmp)
        store.save_arrays(tmp, np.concatenate([old_ids, new_ids]), np.concatenate([old_vectors, vectors]),
                          np.concatenate([old_thumbnails, items.images.numpy()]))
        pause_point("writing")
        record_change(manifest, {"op": "add", "count": len(items), "origin": items.origin, "at": None,
                                 "skipped": len(items.skipped), "duplicates": total - len(items)},
                      item_count=int(index.ntotal), next_id=int(new_ids[-1]) + 1)
        write_manifest(tmp, manifest)
    return manifest, new_ids.tolist()


def source_variants(source: str) -> list[str]:
    """How a source given on the command line may be stored: as given, or as an absolute path
    (sources of image files are stored absolute), resolved or not."""
    variants = [source]
    if ":" in source and not Path(source).exists() and not source.startswith(("/", ".", "~")):
        return variants  # a data-set item such as fashion_mnist:train:12
    path = Path(source).expanduser()
    for candidate in (path.absolute(), path.resolve()):
        text = str(candidate)
        if text not in variants:
            variants.append(text)
    return variants


def remove_items(index_dir: str | Path, ids: Iterable[int] = (), sources: Iterable[str] = (), *,
                 strict: bool = False) -> tuple[dict, list[int]]:
    """Remove items by id and/or source (relative paths are matched against the stored absolute
    ones); returns (manifest, the removed ids). Unknown ids/sources are reported in
    ``manifest["history"][-1]["not_found"]`` and the others removed; with ``strict`` (or when none
    is found) they raise HetsearchError and nothing is changed."""
    folder = Path(index_dir)
    recover(folder)
    read_manifest(folder)
    wanted_ids = sorted({int(i) for i in ids})
    wanted_sources = list(dict.fromkeys(sources))
    if not wanted_ids and not wanted_sources:
        raise HetsearchError("index remove: give item ids and/or --source values to remove")
    too_large = [i for i in wanted_ids if not 0 <= i < 2**63]
    wanted_ids = [i for i in wanted_ids if 0 <= i < 2**63]
    with write_transaction(folder, copy_existing=True) as tmp:
        manifest = read_manifest(tmp, folder)
        index_type = manifest["index_type"]
        _checked(folder, tmp, manifest, skip=() if faiss_index.supports_remove(index_type) else (FAISS_NAME,))
        present, missing, by_source = store.find_items(tmp, wanted_ids, map(source_variants, wanted_sources))
        missing = too_large + missing
        remove = np.array(sorted(present | by_source), dtype=np.int64)
        if missing and (strict or not len(remove)):
            raise HetsearchError(f"{folder}: no items with id/source {', '.join(map(str, missing))}; nothing removed")
        all_ids, all_vectors, all_thumbnails = store.load_arrays(tmp)
        keep = ~np.isin(all_ids, remove)
        vectors = all_vectors[keep]
        if faiss_index.supports_remove(index_type):
            index = faiss_index.read_index(tmp / FAISS_NAME)
            faiss_index.remove_ids(index, remove)
        else:  # HNSW graphs cannot drop nodes: rebuild from the stored vectors (no re-embedding)
            index = faiss_index.build_faiss_index(index_type, manifest["index_params"], vectors, all_ids[keep])
        faiss_index.write_index(index, tmp / FAISS_NAME)
        store.delete_items(tmp, remove.tolist())
        store.save_arrays(tmp, all_ids[keep], vectors, all_thumbnails[keep])
        pause_point("writing")
        record_change(manifest, {"op": "remove", "count": int(len(remove)), "at": None,
                                 "not_found": [str(m) for m in missing]}, item_count=int(keep.sum()))
        write_manifest(tmp, manifest)
    return manifest, remove.tolist()


def rebuild_index(index_dir: str | Path, index_type: str, params: dict[str, Any] | None = None) -> dict:
    """Re-create the FAISS index with another type/parameters from the stored vectors."""
    folder = Path(index_dir)
    recover(folder)
    read_manifest(folder)
    with write_transaction(folder, copy_existing=True) as tmp:
        manifest = read_manifest(tmp, folder)
        _checked(folder, tmp, manifest, skip=(FAISS_NAME,))  # a damaged FAISS file is what rebuild repairs
        ids, vectors, _ = store.load_arrays(tmp, thumbnails=False)
        resolved = faiss_index.resolve_params(index_type, params, len(ids))
        index = faiss_index.build_faiss_index(index_type, resolved, vectors, ids)
        faiss_index.write_index(index, tmp / FAISS_NAME)
        record_change(manifest, {"op": "rebuild", "index_type": index_type, "at": None},
                      index_type=index_type, index_params=resolved)
        write_manifest(tmp, manifest)
    return manifest
