"""What goes into a gallery index: images (as the gallery model sees them) with their metadata.

Sources:
* ``dataset_items("SOURCE:SPLIT")``: a split of any registered data set (`hetsearch.data.registry`),
  e.g. ``fashion_mnist:train`` (items read ``fashion_mnist:train:123``) or ``image_folder:gallery``
  with ``root=ROOT`` (items are the image paths); ``SOURCE:all`` for data sets without splits.
* ``folder_items(DIR)``: every image file under DIR (recursively); the label is the name of the
  first-level sub-folder holding the file (none for files directly in DIR).
* ``csv_items(FILE)``: a CSV with header ``path,label[,more columns]``; relative paths are relative
  to the CSV's folder, and the extra columns become the item's user fields.

Files are decoded with the data layer's `DecodeSpec` (channels, size, resize mode, background: the
gallery model's `preprocessing`), in parallel worker processes for large galleries; a gallery
whose decoded pixels exceed 2 GB is decoded into a disk-backed (memory-mapped) array instead of
RAM, from which the index build embeds batch by batch and writes the thumbnails.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from hetsearch.data import DataConfig, load_raw
from hetsearch.data.files import read_csv_rows
from hetsearch.data.fileset import IMAGE_EXTENSIONS, DecodeSpec, default_workers, iterate_decoded
from hetsearch.data.preprocessing import colour_rgb
from hetsearch.data.registry import list_datasets
from hetsearch.data.sources import materialize
from hetsearch.errors import ConfigError, DataError
from hetsearch.utils.terminal import is_terminal

log = logging.getLogger(__name__)


@dataclass
class GalleryItems:
    images: torch.Tensor                  # uint8 (N, C, H, W) at the gallery model's input size
    sources: list[str]
    labels: list[Optional[str]]
    fields: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    origin: dict = field(default_factory=dict)   # how they were loaded, recorded in the manifest

    def __post_init__(self) -> None:
        if not self.fields:
            self.fields = [{} for _ in self.sources]
        n = int(self.images.shape[0])
        if not (len(self.sources) == len(self.labels) == len(self.fields) == n):
            raise ValueError("GalleryItems: images, sources, labels and fields must have equal lengths")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def head(self, limit: Optional[int]) -> "GalleryItems":
        """The first ``limit`` items (all when None)."""
        if limit is None or limit >= len(self):
            return self
        return GalleryItems(images=self.images[:limit], sources=self.sources[:limit], labels=self.labels[:limit],
                            fields=self.fields[:limit], skipped=self.skipped, origin=self.origin)


Select = Callable[[int], slice]  # item count -> the items this process decodes (a shard; index/shards.py)


def _selected(entries: list, limit: Optional[int], select: Optional[Select]) -> list:
    entries = entries[:limit] if limit is not None else entries
    return entries[select(len(entries))] if select is not None else entries


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """``"fashion_mnist:train"`` -> ("fashion_mnist", "train"); the source must be a registered data set."""
    source, _, split = spec.partition(":")
    if not source or not split:
        raise ConfigError(f"--dataset: got {spec!r}, expected SOURCE:SPLIT, e.g. fashion_mnist:train or "
                          f"image_folder:test (data sets: {', '.join(list_datasets())})")
    if source not in list_datasets():
        raise ConfigError(f"--dataset: {source!r} is not a registered data set (known: {', '.join(list_datasets())}); "
                          "or use --images DIR / --csv FILE")
    return source, split


def dataset_items(spec: str, channels: int, image_size: int, *, root: Optional[str] = None,
                  limit: Optional[int] = None, resize: str = "center_crop", background: str = "white",
                  options: Optional[dict] = None, num_workers: Optional[int] = None,
                  select: Optional[Select] = None) -> GalleryItems:
    """A split of a registered data set, decoded at the gallery model's input size."""
    source, split = parse_dataset_spec(spec)
    cfg = DataConfig(source=source, root=root, options=dict(options or {}), channels=channels, image_size=image_size,
                     resize=resize, background=background, num_workers=num_workers)
    raw = load_raw(cfg)
    if split not in raw.splits:
        raise ConfigError(f"--dataset: {source} at {raw.root} (layout {raw.layout}) has splits "
                          f"{', '.join(raw.splits)}, not {split!r}")
    part = raw.splits[split]
    if limit is not None:
        part = part.subset(slice(0, limit))
    if select is not None:
        part = part.subset(select(len(part)))
    data = materialize(part, cfg, f"{raw.root} [{split}]")
    labels = [data.classes[i] if i >= 0 else None for i in data.labels.tolist()]
    return GalleryItems(images=data.images, sources=list(data.sources), labels=labels, skipped=list(data.skipped),
                        origin={"kind": "dataset", "spec": spec, "root": root, "limit": limit, "layout": raw.layout})


STREAM_ABOVE_GB = 2.0  # decoded galleries larger than this go to a disk-backed array, not RAM


def _pixel_buffer(n: int, spec: DecodeSpec, stream_above_gb: float) -> torch.Tensor:
    """uint8 (n, C, H, W): in memory, or backed by an unlinked temporary .npy file (memory-mapped)
    when the decoded gallery exceeds ``stream_above_gb``: the OS pages it in and out, so a gallery
    larger than RAM can be embedded and its thumbnails written batch by batch."""
    shape = (n, spec.channels, spec.image_size, spec.image_size)
    if n * spec.item_bytes <= stream_above_gb * 1e9:
        return torch.empty(shape, dtype=torch.uint8)
    handle, name = tempfile.mkstemp(suffix=".npy", prefix="hetsearch-gallery-")
    os.close(handle)
    array = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=shape)
    os.unlink(name)  # the mapping keeps the file alive; nothing is left behind
    log.info("decoding %d images into a disk-backed array (%.1f GB)", n, n * spec.item_bytes / 1e9)
    return torch.from_numpy(array)


def _decode_all(paths: list[Path], spec: DecodeSpec, progress: bool, num_workers: Optional[int] = None,
                stream_above_gb: float = STREAM_ABOVE_GB):
    """Decode ``paths`` into one uint8 tensor (see `_pixel_buffer`), in worker processes for large sets."""
    workers = (default_workers() if num_workers is None else num_workers) if len(paths) >= 2048 else 0
    out = _pixel_buffer(len(paths), spec, stream_above_gb)
    kept, skipped = [], []
    chunks = iterate_decoded([str(p) for p in paths], spec, num_workers=workers, chunk=256)
    if progress:
        from rich.progress import track

        chunks = track(chunks, description="decoding", total=(len(paths) + 255) // 256,
                       disable=not is_terminal(sys.stdout))
    start = filled = 0
    for images, ok, errors in chunks:
        n = int(ok.shape[0])
        if errors:
            if spec.on_bad_image == "fail":
                raise DataError(f"{errors[0]} (use --on-bad-image skip to skip unreadable files)")
            for message in errors:
                log.warning("skipping %s", message)
        for path, good in zip(paths[start:start + n], ok.tolist()):
            (kept if good else skipped).append(path if good else str(path))
        out[filled:filled + len(images)] = images
        filled += len(images)
        start += n
    if not kept:
        raise DataError(f"no readable images among {len(paths)} file(s) ({len(skipped)} skipped)")
    return out[:filled], kept, skipped


def _spec(channels: int, image_size: int, resize: str, background, on_bad_image: str) -> DecodeSpec:
    rgb = colour_rgb(background) if isinstance(background, str) else tuple(background)
    return DecodeSpec(channels=channels, image_size=image_size, resize=resize, background=rgb, on_bad_image=on_bad_image)


def folder_items(root: str | Path, channels: int, image_size: int, resize: str = "center_crop", *,
                 on_bad_image: str = "fail", progress: bool = False, background="white",
                 num_workers: Optional[int] = None, stream_above_gb: float = STREAM_ABOVE_GB,
                 limit: Optional[int] = None, select: Optional[Select] = None) -> GalleryItems:
    """Every image under ``root`` (sorted by path; the first ``limit``; of those, ``select(n)`` only)."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (--images expects a folder of image files)")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise DataError(f"{root}: no image files (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
    paths = _selected(paths, limit, select)
    spec = _spec(channels, image_size, resize, background, on_bad_image)
    images, kept, skipped = _decode_all(paths, spec, progress, num_workers, stream_above_gb)
    labels = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in kept]
    return GalleryItems(images=images, sources=[str(p) for p in kept], labels=labels, skipped=skipped,
                        origin={"kind": "images", "root": str(root)})


def csv_items(csv_file: str | Path, channels: int, image_size: int, resize: str = "center_crop", *,
              on_bad_image: str = "fail", progress: bool = False, background="white",
              num_workers: Optional[int] = None, stream_above_gb: float = STREAM_ABOVE_GB,
              limit: Optional[int] = None, select: Optional[Select] = None) -> GalleryItems:
    """The rows of ``csv_file`` (the first ``limit``; of those, ``select(n)`` only)."""
    csv_file = Path(csv_file).expanduser().absolute()
    rows, header = read_csv_rows(csv_file)
    if "path" not in header:
        raise DataError(f"{csv_file}: header {header} lacks 'path' (expected 'path[,label,...]')")
    entries = []
    for line_no, row in enumerate(rows, start=2):
        if not row.get("path"):
            raise DataError(f"{csv_file}, line {line_no}: empty path")
        path = Path(row.pop("path")).expanduser()
        label = row.pop("label", "") or None
        entries.append((path if path.is_absolute() else csv_file.parent / path, label, row))
    if not entries:
        raise DataError(f"{csv_file}: no rows after the header")
    entries = _selected(entries, limit, select)
    spec = _spec(channels, image_size, resize, background, on_bad_image)
    images, kept, skipped = _decode_all([e[0] for e in entries], spec, progress, num_workers, stream_above_gb)
    kept_set = {str(p) for p in kept}
    entries = [e for e in entries if str(e[0]) in kept_set]
    return GalleryItems(images=images, sources=[str(e[0]) for e in entries], labels=[e[1] for e in entries],
                        fields=[e[2] for e in entries], skipped=skipped,
                        origin={"kind": "csv", "file": str(csv_file)})
