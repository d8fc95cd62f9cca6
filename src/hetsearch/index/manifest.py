"""The manifest of an index folder (``manifest.json``): what it holds and how it changed.

Every write ends with `write_manifest` (the manifest is written last: it is what makes a version
complete); every change to an existing index records itself with `record_change` (revision,
update time, one history entry); every reader starts with `read_manifest` (validated, one line
naming the file and what to do when it is not a hetsearch index).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from hetsearch.index import store
from hetsearch.index.check import IDS_NAME, VECTORS_NAME, IndexOpenError, file_records, remedy, validate_manifest
from hetsearch.index.storage import MANIFEST_NAME
from hetsearch.index.verify import gallery_reference
from hetsearch.models.checkpoint import LoadedModel, ModelMeta
from hetsearch.utils.io import atomic_write_json

FORMAT = "hetsearch.index/v1"
FORMAT_VERSION = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def gallery_meta_record(meta: ModelMeta) -> dict:
    """What the manifest keeps of the gallery model: enough to check a query model against it."""
    record = meta.to_dict()
    record.pop("config", None)
    record.pop("extra", None)
    return record


def new_manifest(gallery: LoadedModel, *, embedding_dim: int, index_type: str, params: dict[str, Any],
                 item_count: int, image_shape: Sequence[int], build_entry: dict) -> dict:
    """The manifest of a freshly built index: revision 1, ``build_entry`` its first history entry
    (its ``"at"`` is set to the build time)."""
    at = now()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gallery_model_id": gallery.meta.model_id,
        "gallery_model": gallery_meta_record(gallery.meta),
        "gallery_model_path": str(gallery.path.absolute()) if gallery.path else None,
        "embedding_dim": int(embedding_dim),
        "normalization": "l2",
        "metric": "inner_product",
        "index_type": index_type,
        "index_params": params,
        "item_count": int(item_count),
        "next_id": int(item_count),
        "image_shape": list(image_shape),
        "created_at": at,
        "updated_at": at,
        "revision": 1,
        "history": [_stamped(build_entry, at)],
    }


def record_change(manifest: dict, entry: dict, **fields: Any) -> dict:
    """Update ``manifest`` in place for one change of an existing index: ``fields`` (item_count,
    index_type, ...), the update time, the next revision, and ``entry`` appended to the history
    with ``"at"`` set to the update time."""
    at = now()
    manifest.update(**fields, updated_at=at, revision=int(manifest.get("revision", 1)) + 1)
    manifest.setdefault("history", []).append(_stamped(entry, at))
    return manifest


def _stamped(entry: dict, at: str) -> dict:
    """``entry`` with ``"at"`` set (where the caller placed the key, else last)."""
    entry = dict(entry)
    entry["at"] = at
    return entry


def write_manifest(folder: Path, manifest: dict, labels: Optional[Sequence[Optional[str]]] = None) -> None:
    """Record each data file's size and checksum and the verification reference, then write the
    manifest (last: it is what makes the version complete). ``labels``: the items' labels in row
    order (read from the metadata store when not given)."""
    ids = np.load(folder / IDS_NAME)
    if labels is None:
        by_id = store.labels_by_id(folder)
        labels = [by_id.get(int(i)) for i in ids]
    manifest["verification"] = gallery_reference(ids, np.load(folder / VECTORS_NAME, mmap_mode="r"), list(labels))
    manifest["files"] = file_records(folder)
    atomic_write_json(folder / MANIFEST_NAME, manifest)


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


def source_roots(manifest: dict) -> list[str]:
    """The absolute folders the index's items were read from (image folders, CSV folders), the most
    specific first."""
    roots = []
    for entry in manifest.get("history") or []:
        origin = entry.get("origin") or {} if isinstance(entry, dict) else {}
        root = origin.get("root") if origin.get("kind") == "images" else \
            str(Path(origin["file"]).parent) if origin.get("kind") == "csv" and origin.get("file") else None
        if isinstance(root, str) and root.startswith("/") and root not in roots:
            roots.append(root)
    return sorted(roots, key=len, reverse=True)  # the most specific folder first
