"""Reading an index folder: `GalleryIndex` (search, items, thumbnails) and the stored embeddings.

Layout of ``INDEX_DIR``::

    manifest.json     format, gallery model (id and architecture), embedding dim, normalisation,
                      metric, index type and parameters, item count, creation/update times
                      (`hetsearch.index.manifest`)
    index.faiss       the FAISS index over the gallery embeddings, addressed by item id
    metadata.sqlite   table ``items(id, source, label, fields)``; fields = user fields as JSON
    ids.npy           int64 (N,), item ids in ascending order (row i of the next two files)
    vectors.npy       float32 (N, D), the gallery embeddings: add/remove/rebuild never re-embed
    thumbnails.npy    uint8 (N, C, H, W), each item as the gallery model saw it; the only source
                      of ``/items/{id}/image``, so serving never touches paths

(`hetsearch.index.store` reads and writes the data files.) Writes (`hetsearch.index.writer`) go
through `hetsearch.index.storage.write_transaction` (build in a temporary folder, then swap), so a
crash leaves the previous version intact; readers load a version under a shared lock.

Code outside ``hetsearch.index`` reads an index through this module: `GalleryIndex` /
`open_index` to search it, `read_stored` / `load_vectors` for the stored embeddings themselves.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from hetsearch.eval.ranking import sort_ties_by_index
from hetsearch.index import faiss_index, store
from hetsearch.index.check import (FAISS_NAME, IDS_NAME, METADATA_NAME, THUMBNAILS_NAME, VECTORS_NAME,
                                   IndexOpenError, check_folder, raise_first)
from hetsearch.index.contract import check_query_model
from hetsearch.index.manifest import read_manifest, source_roots
from hetsearch.index.storage import read_lock, recover
from hetsearch.models.checkpoint import ModelMeta


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
        self._roots = source_roots(manifest)

    @classmethod
    def open(cls, path: str | Path, *, query_meta: ModelMeta | None = None, allow_incompatible: bool = False,
             search_params: dict[str, Any] | None = None) -> "GalleryIndex":
        """Load an index; with ``query_meta`` the model contract is checked first (see
        `hetsearch.index.contract.check_query_model`). ``search_params`` overrides nprobe / efSearch."""
        folder = Path(path)
        recover(folder)
        with read_lock(folder.absolute()):
            manifest = read_manifest(folder)
            warnings = check_query_model(manifest, query_meta, allow_incompatible=allow_incompatible) \
                if query_meta is not None else []
            loaded: dict = {}
            raise_first(folder, check_folder(folder, manifest, loaded=loaded))
            index, db, ids, thumbnails = _load_version(folder, loaded.get(FAISS_NAME))
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
        """(scores, item ids), both (N, k), ranked by the tie rule (`hetsearch.eval.ranking`: equal
        scores by ascending id); missing results (k > items) have id -1 and come last."""
        scores, ids = faiss_index.search(self.index, queries, k)
        return sort_ties_by_index(scores, ids)

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
        with self._db_lock:
            return store.rows_by_id(self._db, ids)

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


def _load_version(folder: Path, index=None):
    """(FAISS index, in-memory metadata store, ids, memory-mapped thumbnails) of the version the
    caller checked (``index``: the FAISS index the check read already)."""
    try:
        index = index if index is not None else faiss_index.read_index(folder / FAISS_NAME)
        db = store.in_memory_copy(folder)
        ids = np.load(folder / IDS_NAME, allow_pickle=False)
        thumbnails = np.load(folder / THUMBNAILS_NAME, mmap_mode="r", allow_pickle=False)
    except (RuntimeError, ValueError, OSError, sqlite3.Error) as exc:  # changed since the check
        raise IndexOpenError(f"{folder}: unreadable index file ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); "
                             f"run `hetsearch index check {folder}`") from None
    return index, db, ids, thumbnails


def _checked_files(folder: Path, names: tuple[str, ...]) -> dict:
    """The manifest, after checking the data files ``names`` against it (call under the read lock)."""
    manifest = read_manifest(folder)
    raise_first(folder, [p for p in check_folder(folder, manifest) if p.file in names])
    return manifest


def load_vectors(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, gallery embeddings) stored in an index folder."""
    folder = Path(path)
    recover(folder)
    with read_lock(folder.absolute()):
        _checked_files(folder, (IDS_NAME, VECTORS_NAME, THUMBNAILS_NAME))
        return np.load(folder / IDS_NAME, allow_pickle=False), np.load(folder / VECTORS_NAME, allow_pickle=False)


@dataclass
class StoredGallery:
    """Everything an index stores but the FAISS index, row by row (ascending item id): for code
    that uses the gallery embeddings or images themselves (training banks, parity checks,
    evaluation)."""

    manifest: dict
    ids: np.ndarray                  # int64 (N,)
    vectors: np.ndarray              # float32 (N, D), the gallery model's embeddings
    thumbnails: np.ndarray           # uint8 (N, C, H, W), memory-mapped
    sources: list[Optional[str]]     # None only for a row the metadata store lacks
    labels: list[Optional[str]]

    @property
    def gallery_model_id(self) -> str:
        return self.manifest["gallery_model_id"]


def read_stored(path: str | Path) -> StoredGallery:
    """The stored gallery of an index folder (files checked against the manifest first)."""
    folder = Path(path)
    recover(folder)
    with read_lock(folder.absolute()):
        manifest = _checked_files(folder, (IDS_NAME, VECTORS_NAME, THUMBNAILS_NAME, METADATA_NAME))
        ids = np.load(folder / IDS_NAME, allow_pickle=False)
        vectors = np.load(folder / VECTORS_NAME, allow_pickle=False)
        thumbnails = np.load(folder / THUMBNAILS_NAME, mmap_mode="r", allow_pickle=False)
        db = store.in_memory_copy(folder)
    try:
        rows = store.rows_by_id(db, [int(i) for i in ids])
    finally:
        db.close()
    found = [rows.get(int(i), {}) for i in ids]
    return StoredGallery(manifest, ids, vectors, thumbnails, [row.get("source") for row in found],
                         [row.get("label") for row in found])
