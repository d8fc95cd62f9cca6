"""Checks of an index folder: the manifest's fields, every data file against the manifest, and the
files against each other. Each problem is one line naming the file, what is wrong and what to do.

* `validate_manifest` checks the manifest's own fields (types, known index type, parameters).
* `check_folder(folder, manifest, deep=False)` checks every file cheaply, without reading the
  data: ``.npy`` headers (dtype, shape) and sizes, the FAISS index (type, dimension, count), the
  SQLite ``items`` table, the sizes recorded in the manifest. `GalleryIndex.open` runs it, so a
  damaged index is refused at open with one line, never half-served.
* ``deep=True`` (``hetsearch index check DIR``) also compares each file's SHA-256 with the one the
  manifest recorded at the last write, and reads the ids (sorted, unique, below ``next_id``).

Writers record ``files`` (size and SHA-256 of each data file) in the manifest (`file_records`).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import faiss
import numpy as np

from hetsearch.errors import ConfigError, HetsearchError
from hetsearch.index import faiss_index
from hetsearch.index.storage import MANIFEST_NAME
from hetsearch.models.checkpoint import ModelMeta

FAISS_NAME = "index.faiss"
METADATA_NAME = "metadata.sqlite"
IDS_NAME = "ids.npy"
VECTORS_NAME = "vectors.npy"
THUMBNAILS_NAME = "thumbnails.npy"
DATA_FILES = (FAISS_NAME, METADATA_NAME, IDS_NAME, VECTORS_NAME, THUMBNAILS_NAME)


class IndexOpenError(HetsearchError):
    """A folder is not a readable hetsearch index."""


def remedy(name: str, folder: Path, manifest: Optional[dict] = None) -> str:
    """What to do when file ``name`` of the index at ``folder`` is damaged."""
    index_type = (manifest or {}).get("index_type", "flat")
    rebuild_all = (f"restore the folder from a backup, or rebuild the index from the gallery images with "
                   f"`hetsearch index build --overwrite --out {folder} ...`")
    if name == FAISS_NAME and manifest is not None:
        return (f"recreate it from the stored embeddings with `hetsearch index rebuild --index {folder} "
                f"--type {index_type}`")
    if name == MANIFEST_NAME:
        backup = folder.parent / f".{folder.name}.old"
        if backup.exists():
            return f"restore the previous version kept in {backup}, or {rebuild_all.split(', or ', 1)[1]}"
    return rebuild_all


@dataclass
class Problem:
    file: str
    message: str
    remedy: str

    def line(self, folder: Path) -> str:
        return f"{folder / self.file}: {self.message}; {self.remedy}"


# ---------------------------------------------------------------- manifest


def _field_problem(key: str, value, expected: str) -> str:
    return f"field {key!r} is {value!r}, expected {expected}"


def validate_manifest(manifest: dict) -> list[str]:
    """Problems with the manifest's own fields (empty when it is sound)."""
    problems = []

    def need(key: str, check, expected: str) -> bool:
        if key not in manifest:
            problems.append(f"field {key!r} is missing")
            return False
        if not check(manifest[key]):
            problems.append(_field_problem(key, manifest[key], expected))
            return False
        return True

    def positive_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    def count(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    need("gallery_model_id", lambda v: isinstance(v, str) and bool(v), "a model id")
    if need("gallery_model", lambda v: isinstance(v, dict), "the gallery model's record"):
        try:
            meta = ModelMeta.from_dict(manifest["gallery_model"])
            if meta.model_id != manifest.get("gallery_model_id"):
                problems.append(f"gallery_model.model_id {meta.model_id!r} differs from gallery_model_id "
                                f"{manifest.get('gallery_model_id')!r}")
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            problems.append(f"field 'gallery_model' is not a model record ({type(exc).__name__}: {exc})")
            meta = None
    else:
        meta = None
    if need("embedding_dim", positive_int, "a positive integer") and meta is not None:
        if meta.spec.embedding_dim != manifest["embedding_dim"]:
            problems.append(f"embedding_dim {manifest['embedding_dim']} differs from the gallery model's "
                            f"{meta.spec.embedding_dim}")
    need("normalization", lambda v: v == "l2", "'l2'")
    need("metric", lambda v: v == "inner_product", "'inner_product'")
    if need("index_type", lambda v: v in faiss_index.INDEX_TYPES, f"one of {', '.join(faiss_index.INDEX_TYPES)}"):
        if need("index_params", lambda v: isinstance(v, dict), "a mapping"):
            try:
                faiss_index.resolve_params(manifest["index_type"], manifest["index_params"],
                                           max(1, int(manifest.get("item_count") or 1)))
            except ConfigError as exc:
                problems.append(f"field 'index_params': {exc}")
    need("item_count", count, "a count")
    need("next_id", count, "a count")
    need("image_shape", lambda v: isinstance(v, list) and len(v) == 3 and all(positive_int(x) for x in v)
         and v[0] in (1, 3), "[channels (1 or 3), height, width]")
    if "files" in manifest and not (isinstance(manifest["files"], dict) and all(
            isinstance(r, dict) and isinstance(r.get("bytes"), int) for r in manifest["files"].values())):
        problems.append("field 'files' is not a mapping of file records")
    return problems


# ---------------------------------------------------------------- data files


def file_records(folder: Path) -> dict:
    """Size and SHA-256 of each data file, as the manifest records them."""
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)}
            for name in DATA_FILES}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def npy_header(path: Path) -> tuple[np.dtype, tuple, int]:
    """(dtype, shape, expected file size) from an .npy header; ValueError when it is not one."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:  # pragma: no cover - numpy raises for unknown versions already
            raise ValueError(f"unknown .npy version {version}")
        offset = fh.tell()
    if fortran:
        raise ValueError("Fortran-ordered array")
    if dtype.hasobject:
        raise ValueError(f"holds Python objects (dtype {dtype}), not numbers")
    return dtype, tuple(shape), offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _check_npy(folder: Path, name: str, kind: str, dtype: np.dtype, shape: tuple) -> Optional[str]:
    """None when the file's header and size match; else the problem. ``shape`` may hold None (any)."""
    path = folder / name
    try:
        found, found_shape, size = npy_header(path)
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        return f"not a readable {kind} array ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if found != dtype:
        return f"holds {found} values, expected {dtype} ({kind})"
    if len(found_shape) != len(shape) or any(e is not None and e != f for e, f in zip(shape, found_shape)):
        want = "(" + ", ".join("N" if e is None else str(e) for e in shape) + ")"
        return f"has shape {found_shape}, expected {want} ({kind})"
    actual = path.stat().st_size
    if actual != size:
        return f"is {'truncated' if actual < size else 'longer than its header says'} ({actual} bytes, " \
               f"its header needs {size})"
    return None


def _check_faiss(folder: Path, manifest: dict, loaded: Optional[dict] = None) -> Optional[str]:
    try:
        index = faiss_index.read_index(folder / FAISS_NAME)
        if loaded is not None:
            loaded[FAISS_NAME] = index
    except (RuntimeError, MemoryError, ValueError) as exc:
        return f"unreadable FAISS index ({str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__})"
    if index.d != manifest["embedding_dim"]:
        return f"FAISS index of dimension {index.d}, but the manifest says embedding_dim {manifest['embedding_dim']}"
    expected = {"flat": "IndexFlat", "ivf": "IndexIVFFlat", "hnsw": "IndexHNSWFlat"}[manifest["index_type"]]
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if not type(inner).__name__.startswith(expected):
        return f"holds a {type(inner).__name__}, but the manifest says index_type {manifest['index_type']!r}"
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return "FAISS index does not use the inner-product metric the manifest records"
    if index.ntotal != manifest["item_count"]:
        return f"FAISS index holds {index.ntotal} vectors, the manifest says item_count {manifest['item_count']}"
    return None


def _check_sqlite(folder: Path, manifest: dict) -> Optional[str]:
    path = folder / METADATA_NAME
    try:
        conn = sqlite3.connect(f"file:{path.absolute()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return f"cannot open the metadata database ({exc})"
    try:
        conn.execute("SELECT id, source, label, fields FROM items LIMIT 1").fetchall()
        rows = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    except sqlite3.Error as exc:
        return f"not a readable metadata database with table items(id, source, label, fields) ({exc})"
    finally:
        conn.close()
    if rows != manifest["item_count"]:
        return f"holds {rows} items, the manifest says item_count {manifest['item_count']}"
    return None


def check_folder(folder: Path, manifest: dict, *, deep: bool = False, display: Optional[Path] = None,
                 loaded: Optional[dict] = None) -> list[Problem]:
    """Every problem of the data files of an index whose manifest passed `validate_manifest`.
    ``display``: the index folder to name in remedies (writers check a copy in a temporary folder).
    ``loaded``: receives the FAISS index read for the check (``loaded["index.faiss"]``), so that an
    open does not read it twice."""
    folder = Path(folder)
    shown = Path(display) if display is not None else folder
    problems: list[Problem] = []

    def add(name: str, message: Optional[str]) -> None:
        if message:
            problems.append(Problem(name, message, remedy(name, shown, manifest)))

    missing = [name for name in DATA_FILES if not (folder / name).is_file()]
    for name in missing:
        add(name, "file is missing")
    n, dim = manifest["item_count"], manifest["embedding_dim"]
    counts = set()
    for name in (IDS_NAME, VECTORS_NAME, THUMBNAILS_NAME):
        try:
            shape = npy_header(folder / name)[1]
            counts.add(shape[0] if shape else None)
        except (ValueError, OSError, SyntaxError, EOFError):
            counts.add(None)
    if len(counts) == 1 and None not in counts and counts != {n}:  # the data agree with each other, not with it
        found = counts.pop()
        problems.append(Problem(MANIFEST_NAME, f"item_count is {n}, but ids.npy, vectors.npy and thumbnails.npy "
                                               f"hold {found} items", remedy(MANIFEST_NAME, shown, None)))
        manifest = {**manifest, "item_count": found}
        n = found
    records = manifest.get("files") or {}
    for name in DATA_FILES:
        if name in missing:
            continue
        record = records.get(name)
        if name == IDS_NAME:
            message = _check_npy(folder, name, "item ids", np.dtype(np.int64), (n,))
        elif name == VECTORS_NAME:
            message = _check_npy(folder, name, "gallery embeddings", np.dtype(np.float32), (n, dim))
        elif name == THUMBNAILS_NAME:
            message = _check_npy(folder, name, "thumbnails", np.dtype(np.uint8), (n, *manifest["image_shape"]))
        elif name == FAISS_NAME:
            message = _check_faiss(folder, manifest, loaded)
        else:
            message = _check_sqlite(folder, manifest)
        size = (folder / name).stat().st_size
        if message is None and record is not None and size != record["bytes"]:
            message = (f"{'is truncated' if size < record['bytes'] else 'has changed'} ({size} bytes, the manifest "
                       f"recorded {record['bytes']} at the last write)")
        add(name, message)
        if deep and record is not None and record.get("sha256") and not any(p.file == name for p in problems):
            if sha256_of(folder / name) != record["sha256"]:
                add(name, "content differs from the checksum the manifest recorded at the last write")
    if deep and not any(p.file == IDS_NAME for p in problems) and IDS_NAME not in missing:
        ids = np.load(folder / IDS_NAME, allow_pickle=False)
        if len(ids) and (np.any(np.diff(ids) <= 0) or ids[0] < 0 or ids[-1] >= manifest["next_id"]):
            add(IDS_NAME, f"item ids are not unique, ascending and below next_id {manifest['next_id']}")
    return problems


def raise_first(folder: Path, problems: list[Problem]) -> None:
    if problems:
        more = f" ({len(problems) - 1} more problem(s): run `hetsearch index check {folder}`)" \
            if len(problems) > 1 else ""
        raise IndexOpenError(problems[0].line(folder) + more)
