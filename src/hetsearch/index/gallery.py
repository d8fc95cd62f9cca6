"""The gallery index folder: FAISS index + SQLite metadata + manifest (+ vectors and thumbnails).

Layout of ``INDEX_DIR``::

    manifest.json     format, gallery model (id and architecture), embedding dim, normalisation,
                      metric, index type and parameters, item count, creation/update times
    index.faiss       the FAISS index over the gallery embeddings, addressed by item id
    metadata.sqlite   table ``items(id, source, label, fields)``; fields = user fields as JSON
    ids.npy           int64 (N,), item ids in ascending order (row i of the next two files)
    vectors.npy       float32 (N, D), the gallery embeddings: add/remove/rebuild never re-embed
    thumbnails.npy    uint8 (N, C, H, W), each item as the gallery model saw it; the only source
                      of ``/items/{id}/image``, so serving never touches paths

Every write goes through `hetsearch.index.storage.write_transaction` (build in a temporary folder,
then swap), so a crash leaves the previous version intact.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from hetsearch.models.contract import check_pair
from hetsearch.errors import CompatibilityError, HetsearchError
from hetsearch.index import faiss_index
from hetsearch.index.check import (FAISS_NAME, IDS_NAME, METADATA_NAME, THUMBNAILS_NAME, VECTORS_NAME,
                                   IndexOpenError, check_folder, file_records, raise_first, remedy,
                                   validate_manifest)
from hetsearch.index.items import GalleryItems
from hetsearch.index.storage import (MANIFEST_NAME, IndexWriteError, pause_point, read_lock, recover,
                                     write_transaction)
from hetsearch.models.checkpoint import LoadedModel, ModelMeta
from hetsearch.utils.io import atomic_write_json

FORMAT = "hetsearch.index/v1"
FORMAT_VERSION = 1
INDEX_FILES = (MANIFEST_NAME, FAISS_NAME, METADATA_NAME, IDS_NAME, VECTORS_NAME, THUMBNAILS_NAME)


@dataclass
class Hit:
    id: int
    score: float
    source: str
    label: Optional[str]
    fields: dict

    def to_dict(self) -> dict:
        return {"id": self.id, "score": self.score, "label": self.label, "source": self.source,
                "fields": self.fields}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def gallery_meta_record(meta: ModelMeta) -> dict:
    """What the manifest keeps of the gallery model: enough to check a query model against it."""
    record = meta.to_dict()
    record.pop("config", None)
    record.pop("extra", None)
    return record


# ---------------------------------------------------------------- embedding


def embed_images(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 256,
                 device: str | torch.device | None = None, progress: bool = False) -> np.ndarray:
    """float32 (N, D) embeddings of uint8 (N, C, H, W) images (`hetsearch.eval.embed`)."""
    from hetsearch.eval import embed

    if len(images) == 0:
        return np.zeros((0, model.embedding_dim), dtype=np.float32)
    return np.ascontiguousarray(embed(model, images, batch_size=batch_size, device=device, progress=progress),
                                dtype=np.float32)


# ---------------------------------------------------------------- metadata store


_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    label TEXT,
    fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS items_source ON items(source);
"""


def _write_metadata(path: Path, ids: Sequence[int], items: GalleryItems) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_SCHEMA)
        conn.executemany("INSERT INTO items(id, source, label, fields) VALUES (?, ?, ?, ?)",
                         ((int(i), s, lab, json.dumps(f, sort_keys=True))
                          for i, s, lab, f in zip(ids, items.sources, items.labels, items.fields)))
        conn.commit()
    finally:
        conn.close()


def _delete_metadata(path: Path, ids: Sequence[int]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executemany("DELETE FROM items WHERE id = ?", ((int(i),) for i in ids))
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()


# ---------------------------------------------------------------- writing


def _check_items(items: GalleryItems, gallery: LoadedModel) -> None:
    expected = tuple(gallery.model.input_shape)
    if tuple(items.images.shape[1:]) != expected:
        raise HetsearchError(f"gallery images have shape {tuple(items.images.shape[1:])}, but gallery model "
                             f"{gallery.meta.model_id} takes {expected}")
    if len(items) == 0:
        raise HetsearchError("no gallery images to index")


def _write_manifest(folder: Path, manifest: dict, labels: Sequence[Optional[str]] | None = None) -> None:
    """Record each data file's size and checksum and the verification reference, then write the
    manifest (last: it is what makes the version complete)."""
    from hetsearch.index.verify import gallery_reference

    ids = np.load(folder / IDS_NAME)
    if labels is None:
        conn = sqlite3.connect(folder / METADATA_NAME)
        try:
            by_id = dict(conn.execute("SELECT id, label FROM items").fetchall())
        finally:
            conn.close()
        labels = [by_id.get(int(i)) for i in ids]
    manifest["verification"] = gallery_reference(ids, np.load(folder / VECTORS_NAME, mmap_mode="r"), list(labels))
    manifest["files"] = file_records(folder)
    atomic_write_json(folder / MANIFEST_NAME, manifest)


def _checked(folder: Path, tmp: Path, manifest: dict, *, skip: tuple[str, ...] = ()) -> None:
    """Refuse to update an index whose files are damaged (one line naming the file)."""
    raise_first(folder, [p for p in check_folder(tmp, manifest, display=folder) if p.file not in skip])


def _existing_sources(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT source FROM items")}
    finally:
        conn.close()


def _save_arrays(folder: Path, ids: np.ndarray, vectors: np.ndarray, thumbnails: np.ndarray) -> None:
    np.save(folder / IDS_NAME, np.ascontiguousarray(ids, dtype=np.int64))
    np.save(folder / VECTORS_NAME, np.ascontiguousarray(vectors, dtype=np.float32))
    np.save(folder / THUMBNAILS_NAME, np.ascontiguousarray(thumbnails, dtype=np.uint8))


def build_index(out: str | Path, gallery: LoadedModel, items: GalleryItems, *, index_type: str = "flat",
                params: dict[str, Any] | None = None, overwrite: bool = False, batch_size: int = 256,
                device: str | torch.device | None = None, progress: bool = False,
                vectors: np.ndarray | None = None) -> dict:
    """Embed ``items`` with the gallery model and write a new index folder at ``out``.

    ``vectors`` may pass precomputed gallery embeddings (benchmarks); they must come from
    ``gallery``. Returns the manifest.
    """
    out = Path(out)
    recover(out)
    if out.exists() and not overwrite:
        raise IndexWriteError(f"{out}: already exists (use --overwrite to replace it, or `hetsearch index add` "
                              "to add items to it)")
    if out.exists() and not out.is_dir():
        raise IndexWriteError(f"{out}: exists and is not a folder")
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
        _write_metadata(tmp / METADATA_NAME, ids.tolist(), items)
        _save_arrays(tmp, ids, vectors, items.images.numpy())
        pause_point("writing")
        now = _now()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gallery_model_id": gallery.meta.model_id,
            "gallery_model": gallery_meta_record(gallery.meta),
            "gallery_model_path": str(gallery.path.absolute()) if gallery.path else None,
            "embedding_dim": int(vectors.shape[1]),
            "normalization": "l2",
            "metric": "inner_product",
            "index_type": index_type,
            "index_params": resolved,
            "item_count": len(items),
            "next_id": len(items),
            "image_shape": list(items.images.shape[1:]),
            "created_at": now,
            "updated_at": now,
            "revision": 1,
            "history": [{"op": "build", "count": len(items), "origin": items.origin, "at": now,
                         "embed_s": round(embed_s, 3), "skipped": len(items.skipped)}],
        }
        _write_manifest(tmp, manifest, items.labels)
    return manifest


def read_manifest(folder: Path, display: Path | None = None) -> dict:
    """The manifest of an index folder, validated (IndexOpenError otherwise). ``display``: the folder
    to name in errors (writers read the copy in their temporary folder)."""
    folder = Path(folder)
    shown = Path(display) if display is not None else folder
    path = folder / MANIFEST_NAME
    if not path.is_file():
        if not folder.exists():
            raise IndexOpenError(f"{shown}: no such index folder (build one with `hetsearch index build`)")
        if not folder.is_dir():
            raise IndexOpenError(f"{shown}: not a folder; --index expects an index folder from `hetsearch index build`")
        raise IndexOpenError(f"{shown}: not a hetsearch index folder (no {MANIFEST_NAME}); "
                             f"{remedy(MANIFEST_NAME, shown)}")
    fix = remedy(MANIFEST_NAME, shown)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexOpenError(f"{shown / MANIFEST_NAME}: unreadable manifest ({exc}); {fix}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexOpenError(f"{shown / MANIFEST_NAME}: not a hetsearch index manifest (expected format "
                             f"{FORMAT!r}); {fix}")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexOpenError(f"{shown / MANIFEST_NAME}: index format version {version!r} is newer than this "
                             f"hetsearch understands ({FORMAT_VERSION}); upgrade hetsearch")
    problems = validate_manifest(manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IndexOpenError(f"{shown / MANIFEST_NAME}: {problems[0]}{more}; {fix}")
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
            known = _existing_sources(tmp / METADATA_NAME)
            keep = [i for i, source in enumerate(items.sources) if source not in known]
            duplicates = [source for source in items.sources if source in known]
            if duplicates:
                if not keep:
                    raise HetsearchError(f"{folder}: all {len(items)} item(s) are already in the index (same "
                                         f"sources, e.g. {duplicates[0]}); nothing added (--allow-duplicates "
                                         "adds them again)")
                items, vectors = _subset(items, keep), vectors[keep]
        start = int(manifest["next_id"])
        new_ids = np.arange(start, start + len(items), dtype=np.int64)
        index = faiss_index.read_index(tmp / FAISS_NAME)
        index.add_with_ids(vectors, new_ids)
        faiss_index.write_index(index, tmp / FAISS_NAME)
        _write_metadata(tmp / METADATA_NAME, new_ids.tolist(), items)
        old_ids = np.load(tmp / IDS_NAME)
        _save_arrays(tmp, np.concatenate([old_ids, new_ids]),
                     np.concatenate([np.load(tmp / VECTORS_NAME), vectors]),
                     np.concatenate([np.load(tmp / THUMBNAILS_NAME), items.images.numpy()]))
        pause_point("writing")
        now = _now()
        manifest.update(item_count=int(index.ntotal), next_id=int(new_ids[-1]) + 1, updated_at=now,
                        revision=int(manifest.get("revision", 1)) + 1)
        manifest.setdefault("history", []).append(
            {"op": "add", "count": len(items), "origin": items.origin, "at": now, "skipped": len(items.skipped),
             "duplicates": total - len(items)})
        _write_manifest(tmp, manifest)
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
        _checked(folder, tmp, manifest, skip=(FAISS_NAME,) if not faiss_index.supports_remove(
            manifest["index_type"]) else ())
        conn = sqlite3.connect(tmp / METADATA_NAME)
        try:
            present = {row[0] for row in conn.execute(
                f"SELECT id FROM items WHERE id IN ({','.join('?' * len(wanted_ids))})", wanted_ids)} \
                if wanted_ids else set()
            missing: list = too_large + [i for i in wanted_ids if i not in present]
            by_source: set[int] = set()
            for source in wanted_sources:
                found = []
                for variant in source_variants(source):
                    found += [row[0] for row in conn.execute("SELECT id FROM items WHERE source = ?", (variant,))]
                if not found:
                    missing.append(source)
                by_source.update(found)
        finally:
            conn.close()
        remove = np.array(sorted(present | by_source), dtype=np.int64)
        if missing and (strict or not len(remove)):
            raise HetsearchError(f"{folder}: no items with id/source {', '.join(map(str, missing))}; nothing removed")
        all_ids = np.load(tmp / IDS_NAME)
        keep = ~np.isin(all_ids, remove)
        vectors = np.load(tmp / VECTORS_NAME)[keep]
        index_type, params = manifest["index_type"], manifest["index_params"]
        if faiss_index.supports_remove(index_type):
            index = faiss_index.read_index(tmp / FAISS_NAME)
            faiss_index.remove_ids(index, remove)
        else:  # HNSW graphs cannot drop nodes: rebuild from the stored vectors (no re-embedding)
            index = faiss_index.build_faiss_index(index_type, params, vectors, all_ids[keep])
        faiss_index.write_index(index, tmp / FAISS_NAME)
        _delete_metadata(tmp / METADATA_NAME, remove.tolist())
        _save_arrays(tmp, all_ids[keep], vectors, np.load(tmp / THUMBNAILS_NAME)[keep])
        pause_point("writing")
        now = _now()
        manifest.update(item_count=int(keep.sum()), updated_at=now, revision=int(manifest.get("revision", 1)) + 1)
        manifest.setdefault("history", []).append({"op": "remove", "count": int(len(remove)), "at": now,
                                                   "not_found": [str(m) for m in missing]})
        _write_manifest(tmp, manifest)
    return manifest, remove.tolist()


def rebuild_index(index_dir: str | Path, index_type: str, params: dict[str, Any] | None = None) -> dict:
    """Re-create the FAISS index with another type/parameters from the stored vectors."""
    folder = Path(index_dir)
    recover(folder)
    read_manifest(folder)
    with write_transaction(folder, copy_existing=True) as tmp:
        manifest = read_manifest(tmp, folder)
        _checked(folder, tmp, manifest, skip=(FAISS_NAME,))  # a damaged FAISS file is what rebuild repairs
        ids, vectors = np.load(tmp / IDS_NAME), np.load(tmp / VECTORS_NAME)
        resolved = faiss_index.resolve_params(index_type, params, len(ids))
        index = faiss_index.build_faiss_index(index_type, resolved, vectors, ids)
        faiss_index.write_index(index, tmp / FAISS_NAME)
        now = _now()
        manifest.update(index_type=index_type, index_params=resolved, updated_at=now,
                        revision=int(manifest.get("revision", 1)) + 1)
        manifest.setdefault("history", []).append({"op": "rebuild", "index_type": index_type, "at": now})
        _write_manifest(tmp, manifest)
    return manifest


# ---------------------------------------------------------------- the model contract


def check_query_model(manifest: dict, query: ModelMeta, *, allow_incompatible: bool = False) -> list[str]:
    """Refuse a query model not trained compatible with the index's gallery model (or being it).

    Returns warnings (non-empty only with ``allow_incompatible``)."""
    gallery = ModelMeta.from_dict(manifest["gallery_model"])
    problems = check_pair(query, gallery)  # raises when the embeddings cannot be compared at all
    if not problems:
        return []
    if allow_incompatible:
        return [f"{problems[0]}; searching anyway because of --allow-incompatible"]
    gallery_path = manifest.get("gallery_model_path") or "<gallery checkpoint>"
    raise CompatibilityError(
        f"query model {query.model_id} is not compatible with gallery model {gallery.model_id}, whose "
        f"embeddings this index holds (the query model declares compatible_with="
        f"{query.compatible_with or 'nothing'}). Fix: use a query model trained against this gallery model "
        f"(e.g. `hetsearch train configs/fashion_mnist/query_mobilenetv3_small.yaml "
        f"compat.gallery_model={gallery_path}`), or search with the gallery model itself, or rebuild the "
        "index with the gallery model this query model is compatible with. For experiments, "
        "--allow-incompatible searches anyway (expect near-chance results).")


# ---------------------------------------------------------------- reading


class GalleryIndex:
    """A read-only, in-memory view of one version of an index folder; safe to share across threads."""

    def __init__(self, path: Path, manifest: dict, index, db: sqlite3.Connection, ids: np.ndarray,
                 thumbnails: np.ndarray):
        self.path = path
        self.manifest = manifest
        self.index = index
        self._db = db
        self._db_lock = threading.Lock()
        self.ids = ids
        self.thumbnails = thumbnails
        self.warnings: list[str] = []
        self.open_kwargs: dict = {}
        self._roots = _source_roots(manifest)

    @classmethod
    def open(cls, path: str | Path, *, query_meta: ModelMeta | None = None, allow_incompatible: bool = False,
             search_params: dict[str, Any] | None = None) -> "GalleryIndex":
        """Load an index; with ``query_meta`` the model contract is checked first (see
        `check_query_model`). ``search_params`` overrides nprobe / efSearch."""
        folder = Path(path)
        recover(folder)
        with read_lock(folder.absolute()):
            manifest = read_manifest(folder)
            warnings = check_query_model(manifest, query_meta, allow_incompatible=allow_incompatible) \
                if query_meta is not None else []
            loaded: dict = {}
            raise_first(folder, check_folder(folder, manifest, loaded=loaded))
            try:
                index = loaded[FAISS_NAME] if FAISS_NAME in loaded else faiss_index.read_index(folder / FAISS_NAME)
                disk = sqlite3.connect(f"file:{(folder / METADATA_NAME).absolute()}?mode=ro", uri=True)
                db = sqlite3.connect(":memory:", check_same_thread=False)
                try:
                    disk.backup(db)
                finally:
                    disk.close()
                ids = np.load(folder / IDS_NAME, allow_pickle=False)
                thumbnails = np.load(folder / THUMBNAILS_NAME, mmap_mode="r", allow_pickle=False)
            except (RuntimeError, ValueError, OSError, sqlite3.Error) as exc:  # changed since the check
                raise IndexOpenError(f"{folder}: unreadable index file ({type(exc).__name__}: "
                                     f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); "
                                     f"run `hetsearch index check {folder}`") from None
        params = dict(manifest["index_params"])
        for key in faiss_index.SEARCH_PARAMS.get(manifest["index_type"], ()):
            if search_params and search_params.get(key) is not None:
                params[key] = int(search_params[key])
        faiss_index.set_search_params(index, manifest["index_type"], params)
        manifest["search_params"] = {k: params[k] for k in faiss_index.SEARCH_PARAMS.get(manifest["index_type"], ())}
        gallery = cls(folder, manifest, index, db, ids, thumbnails)
        gallery.warnings = warnings
        gallery.open_kwargs = {"query_meta": query_meta, "allow_incompatible": allow_incompatible,
                               "search_params": search_params}
        return gallery

    def __len__(self) -> int:
        return int(self.manifest["item_count"])

    def public_source(self, source: str) -> str:
        """``source`` without the server's folders: a path under the folder (or CSV's folder) it was
        indexed from becomes relative to it, any other absolute path its file name. Data-set items
        (``fashion_mnist:train:3``) and relative paths are unchanged."""
        return public_source(source, self._roots)

    @property
    def gallery_model_id(self) -> str:
        return self.manifest["gallery_model_id"]

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    def search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss_index.search(self.index, queries, k)

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Top-k hits per query embedding (fewer when the index holds fewer than k items)."""
        scores, ids = self.search_ids(queries, k)
        records = self.items([int(i) for i in np.unique(ids) if i >= 0])
        return [[Hit(id=int(i), score=float(s), **records[int(i)]) for s, i in zip(row_s, row_i) if i >= 0]
                for row_s, row_i in zip(scores, ids)]

    def items(self, ids: Sequence[int]) -> dict[int, dict]:
        """id -> {source, label, fields} for the ids that exist."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        out = {}
        with self._db_lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                rows = self._db.execute(f"SELECT id, source, label, fields FROM items WHERE id IN "
                                        f"({','.join('?' * len(chunk))})", chunk).fetchall()
                for item_id, source, label, fields in rows:
                    out[item_id] = {"source": source, "label": label, "fields": json.loads(fields)}
        return out

    def item(self, item_id: int) -> dict | None:
        return self.items([item_id]).get(int(item_id))

    def thumbnail(self, item_id: int) -> np.ndarray | None:
        """uint8 (C, H, W) of the item as the gallery model saw it, or None for an unknown id."""
        row = int(np.searchsorted(self.ids, item_id))
        if row >= len(self.ids) or int(self.ids[row]) != int(item_id):
            return None
        return np.asarray(self.thumbnails[row])

    def all_labels(self) -> list[Optional[str]]:
        """Labels in row order (benchmarks)."""
        with self._db_lock:
            labels = dict(self._db.execute("SELECT id, label FROM items").fetchall())
        return [labels[int(i)] for i in self.ids]

    def close(self) -> None:
        with self._db_lock:
            self._db.close()


def _source_roots(manifest: dict) -> list[str]:
    roots = []
    for entry in manifest.get("history") or []:
        origin = entry.get("origin") or {} if isinstance(entry, dict) else {}
        root = origin.get("root") if origin.get("kind") == "images" else \
            str(Path(origin["file"]).parent) if origin.get("kind") == "csv" and origin.get("file") else None
        if isinstance(root, str) and root.startswith("/") and root not in roots:
            roots.append(root)
    return sorted(roots, key=len, reverse=True)  # the most specific folder first


def public_source(source: str, roots: Sequence[str] = ()) -> str:
    if not isinstance(source, str) or not source.startswith(("/", "\\")) and not (len(source) > 2 and
                                                                                 source[1] == ":" and source[2] in "/\\"):
        return source
    for root in roots:
        prefix = root.rstrip("/") + "/"
        if source.startswith(prefix):
            return source[len(prefix):]
    return source.replace("\\", "/").rsplit("/", 1)[-1]


def open_index(path: str | Path, **kwargs) -> GalleryIndex:
    return GalleryIndex.open(path, **kwargs)


def load_vectors(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, gallery embeddings) stored in an index folder."""
    folder = Path(path)
    recover(folder)
    with read_lock(folder.absolute()):
        manifest = read_manifest(folder)
        raise_first(folder, [p for p in check_folder(folder, manifest) if p.file in (IDS_NAME, VECTORS_NAME,
                                                                                  THUMBNAILS_NAME)])
        return np.load(folder / IDS_NAME, allow_pickle=False), np.load(folder / VECTORS_NAME, allow_pickle=False)
