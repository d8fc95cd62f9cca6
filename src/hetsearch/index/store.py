"""The data files of one index version: the SQLite metadata store and the row-aligned arrays.

``metadata.sqlite`` holds table ``items(id, source, label, fields)`` (fields: the user's fields as
JSON); ``ids.npy``, ``vectors.npy`` and ``thumbnails.npy`` hold, row by row in ascending id order,
the item ids, the gallery embeddings and the items as the gallery model saw them. Writers work on
a temporary copy of the folder (`hetsearch.index.storage`); readers get the store read-only.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from hetsearch.index.check import IDS_NAME, METADATA_NAME, THUMBNAILS_NAME, VECTORS_NAME

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    label TEXT,
    fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS items_source ON items(source);
"""


def _connect(folder: Path, *, read_only: bool = False) -> sqlite3.Connection:
    path = Path(folder) / METADATA_NAME
    if read_only:
        return sqlite3.connect(f"file:{path.absolute()}?mode=ro", uri=True)
    return sqlite3.connect(path)


# ---------------------------------------------------------------- writing (a writer's temporary folder)


def insert_items(folder: Path, ids: Sequence[int], sources: Sequence[str], labels: Sequence[Optional[str]],
                 fields: Sequence[dict]) -> None:
    """Add rows (creating the table in a new folder)."""
    with closing(_connect(folder)) as conn:
        conn.executescript(_SCHEMA)
        conn.executemany("INSERT INTO items(id, source, label, fields) VALUES (?, ?, ?, ?)",
                         ((int(i), s, lab, json.dumps(f, sort_keys=True))
                          for i, s, lab, f in zip(ids, sources, labels, fields)))
        conn.commit()


def delete_items(folder: Path, ids: Sequence[int]) -> None:
    with closing(_connect(folder)) as conn:
        conn.executemany("DELETE FROM items WHERE id = ?", ((int(i),) for i in ids))
        conn.commit()
        conn.execute("VACUUM")


def save_arrays(folder: Path, ids: np.ndarray, vectors: np.ndarray, thumbnails: np.ndarray) -> None:
    np.save(folder / IDS_NAME, np.ascontiguousarray(ids, dtype=np.int64))
    np.save(folder / VECTORS_NAME, np.ascontiguousarray(vectors, dtype=np.float32))
    np.save(folder / THUMBNAILS_NAME, np.ascontiguousarray(thumbnails, dtype=np.uint8))


def load_arrays(folder: Path, *, thumbnails: bool = True) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(ids, vectors, thumbnails or None), read fully into memory (writers)."""
    return (np.load(folder / IDS_NAME), np.load(folder / VECTORS_NAME),
            np.load(folder / THUMBNAILS_NAME) if thumbnails else None)


# ---------------------------------------------------------------- queries


def known_sources(folder: Path) -> set[str]:
    with closing(_connect(folder)) as conn:
        return {row[0] for row in conn.execute("SELECT source FROM items")}


def find_items(folder: Path, ids: Sequence[int], sources: Iterable[Sequence[str]]) -> tuple[set[int], list, set[int]]:
    """Look up ``ids`` and ``sources`` (each source given as the list of forms it may be stored
    under). Returns (the ids present, the ids/sources not found, the ids found by source)."""
    ids = list(ids)
    with closing(_connect(folder)) as conn:
        present = {row[0] for row in conn.execute(
            f"SELECT id FROM items WHERE id IN ({','.join('?' * len(ids))})", ids)} if ids else set()
        missing: list = [i for i in ids if i not in present]
        by_source: set[int] = set()
        for variants in sources:
            found = []
            for variant in variants:
                found += [row[0] for row in conn.execute("SELECT id FROM items WHERE source = ?", (variant,))]
            if not found:
                missing.append(variants[0])
            by_source.update(found)
    return present, missing, by_source


def labels_by_id(folder: Path) -> dict[int, Optional[str]]:
    with closing(_connect(folder)) as conn:
        return dict(conn.execute("SELECT id, label FROM items").fetchall())


def sources_by_id(folder: Path) -> dict[int, str]:
    with closing(_connect(folder, read_only=True)) as conn:
        return dict(conn.execute("SELECT id, source FROM items").fetchall())


def in_memory_copy(folder: Path) -> sqlite3.Connection:
    """The metadata store copied into memory (readers: later swaps of the folder cannot disturb it);
    usable from any thread (callers serialise access)."""
    db = sqlite3.connect(":memory:", check_same_thread=False)
    with closing(_connect(folder, read_only=True)) as disk:
        disk.backup(db)
    return db


def rows_by_id(db: sqlite3.Connection, ids: Sequence[int]) -> dict[int, dict]:
    """id -> {source, label, fields} for the ids that exist."""
    out = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        rows = db.execute(f"SELECT id, source, label, fields FROM items WHERE id IN "
                          f"({','.join('?' * len(chunk))})", chunk).fetchall()
        for item_id, source, label, fields in rows:
            out[item_id] = {"source": source, "label": label, "fields": json.loads(fields)}
    return out
