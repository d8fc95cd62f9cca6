"""Tiny random-weight gallery/query models and galleries, for tests and quick benchmark runs.

`make_tiny_models(folder)` writes a gallery checkpoint and a query checkpoint that declares
compatibility with it (plus an undeclared "stranger" with the same architecture), in about a second.
Their embeddings carry no meaning; they exercise the plumbing, not retrieval quality.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hetsearch.index.items import GalleryItems
from hetsearch.models import ModelMeta, create_model, save_checkpoint

TINY_CLASSES = ["circle", "square", "stripes", "noise"]


@dataclass
class TinyModels:
    gallery: Path
    query: Path
    stranger: Path
    gallery_meta: ModelMeta
    query_meta: ModelMeta
    stranger_meta: ModelMeta


def make_tiny_models(folder: str | Path, *, image_size: int = 16, in_chans: int = 1, embedding_dim: int = 16,
                     seed: int = 0, query_backbone: str = "resnet18", query_args: dict | None = None) -> TinyModels:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(num_classes=len(TINY_CLASSES), embedding_dim=embedding_dim, image_size=image_size,
                  in_chans=in_chans)
    torch.manual_seed(seed)
    gallery = create_model("resnet18", backbone_args={"width": 4}, **common)
    query = create_model(query_backbone, backbone_args=query_args if query_args is not None else {"width": 4},
                         **common)
    stranger = create_model("resnet18", backbone_args={"width": 4}, **common)
    gallery_meta = save_checkpoint(folder / "gallery.pt", gallery, classes=TINY_CLASSES)
    query_meta = save_checkpoint(folder / "query.pt", query, classes=TINY_CLASSES,
                                 compatible_with=gallery_meta.model_id, compatibility="bct")
    stranger_meta = save_checkpoint(folder / "stranger.pt", stranger, classes=TINY_CLASSES)
    return TinyModels(folder / "gallery.pt", folder / "query.pt", folder / "stranger.pt",
                      gallery_meta, query_meta, stranger_meta)


def synthetic_images(n: int, size: int = 16, channels: int = 1, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """uint8 (n, size, size, channels) images of four visually distinct kinds, and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, labels = [], []
    for i in range(n):
        kind = i % len(TINY_CLASSES)
        if kind == 0:
            r = rng.uniform(size / 6, size / 2.5)
            img = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r) * 255.0
        elif kind == 1:
            a, b = sorted(rng.integers(1, size - 1, 2))
            img = np.zeros((size, size))
            img[a:b + 1, a:b + 1] = 255
        elif kind == 2:
            img = ((xx // max(1, int(rng.integers(1, 4)))) % 2) * 255.0
        else:
            img = rng.uniform(0, 255, (size, size))
        img = np.clip(img * rng.uniform(0.6, 1.0) + rng.normal(0, 8, (size, size)), 0, 255).astype(np.uint8)
        images.append(np.repeat(img[:, :, None], channels, axis=2))
        labels.append(TINY_CLASSES[kind])
    return np.stack(images), labels


def make_items(n: int, seed: int = 0, prefix: str = "item") -> GalleryItems:
    """``n`` synthetic 16 px grey gallery items (sources PREFIX0.., one user field each)."""
    images, labels = synthetic_images(n, 16, 1, seed)
    return GalleryItems(images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                        sources=[f"{prefix}{i}" for i in range(n)], labels=labels,
                        fields=[{"n": i} for i in range(n)], origin={"kind": "test"})


def write_image_folder(root: str | Path, n: int = 24, size: int = 16, seed: int = 0) -> list[Path]:
    """PNG files in one sub-folder per class (the class is the label), as `--images` expects."""
    root = Path(root)
    images, labels = synthetic_images(n, size, 1, seed)
    paths = []
    for i, (img, label) in enumerate(zip(images, labels)):
        path = root / label / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[:, :, 0]).save(path)
        paths.append(path)
    return paths


def raw_png(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG of zeros written chunk by chunk: any size (a 1 x 39,000,000 pixel bomb is 76 KB), bit
    depth 8 or 16, colour type 0 (grey), 2 (RGB) or 6 (RGBA); Pillow never holds it in memory."""
    import struct
    import zlib

    channels = {0: 1, 2: 3, 6: 4}[colour_type]
    row = b"\0" * (1 + width * channels * bit_depth // 8)
    compressor, parts, left = zlib.compressobj(9), [], height
    while left:
        rows = min(left, 65536)
        parts.append(compressor.compress(row * rows))
        left -= rows
    parts.append(compressor.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- damaged index folders (tests, bench/hardening.py)


def _edit_manifest(folder: Path, edit) -> None:
    import json

    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _drop_items_table(folder: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(folder / "metadata.sqlite")
    conn.execute("DROP TABLE items")
    conn.commit()
    conn.close()


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# name -> (damage(folder), the file the error must name, detected at open (False: only by `index check`))
DAMAGES = {
    "manifest without gallery_model": (lambda f: _edit_manifest(f, lambda m: m.pop("gallery_model")),
                                       "manifest.json", True),
    "manifest embedding_dim 64": (lambda f: _edit_manifest(f, lambda m: m.update(embedding_dim=64)),
                                  "manifest.json", True),
    "manifest index_type bogus": (lambda f: _edit_manifest(f, lambda m: m.update(index_type="bogus")),
                                  "manifest.json", True),
    "manifest item_count wrong": (lambda f: _edit_manifest(f, lambda m: m.update(item_count=m["item_count"] + 3)),
                                  "manifest.json", True),
    "manifest not JSON": (lambda f: _truncate(f / "manifest.json", 0.3), "manifest.json", True),
    "items table missing": (_drop_items_table, "metadata.sqlite", True),
    "metadata not SQLite": (lambda f: (f / "metadata.sqlite").write_bytes(b"garbage" * 100), "metadata.sqlite", True),
    "thumbnails.npy truncated": (lambda f: _truncate(f / "thumbnails.npy"), "thumbnails.npy", True),
    "ids.npy holding objects": (lambda f: np.save(f / "ids.npy", np.array([object()] * 3, dtype=object),
                                                  allow_pickle=True), "ids.npy", True),
    "ids.npy float64": (lambda f: np.save(f / "ids.npy", np.load(f / "ids.npy").astype(np.float64)), "ids.npy", True),
    "vectors.npy truncated": (lambda f: _truncate(f / "vectors.npy"), "vectors.npy", True),
    "vectors.npy wrong dimension": (lambda f: np.save(f / "vectors.npy", np.zeros((len(np.load(f / "ids.npy")), 3),
                                                                                  np.float32)), "vectors.npy", True),
    "index.faiss truncated": (lambda f: _truncate(f / "index.faiss"), "index.faiss", True),
    "index.faiss missing": (lambda f: (f / "index.faiss").unlink(), "index.faiss", True),
    "thumbnails.npy one byte changed": (lambda f: _flip_a_byte(f / "thumbnails.npy"), "thumbnails.npy", False),
}


def run_cli(*args) -> int:
    """`hetsearch ARGS` in this process; its exit code (SystemExit included)."""
    from hetsearch.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
