"""What goes into a gallery index: images (as the gallery model sees them) with their metadata.

Sources:
* ``dataset_items("fashion_mnist:train")``: a split of a data source known to `hetsearch.data`;
  each item's source reads ``fashion_mnist:train:123``.
* ``folder_items(DIR)``: every image file under DIR (recursively); the label is the name of the
  first-level sub-folder holding the file (none for files directly in DIR).
* ``csv_items(FILE)``: a CSV with header ``path,label[,more columns]``; relative paths are relative
  to the CSV's folder, and the extra columns become the item's user fields.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hetsearch.data.config import DataConfig
from hetsearch.data.files import IMAGE_EXTENSIONS, decode_image
from hetsearch.errors import ConfigError, DataError

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


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """``"fashion_mnist:train"`` -> ("fashion_mnist", "train")."""
    source, _, split = spec.partition(":")
    if not source or not split:
        raise ConfigError(f"--dataset: got {spec!r}, expected SOURCE:SPLIT, e.g. fashion_mnist:train")
    if source != "fashion_mnist":
        raise ConfigError(f"--dataset: source {source!r} is not a built-in data set (known: fashion_mnist); "
                          "for your own images use --images DIR or --csv FILE")
    return source, split


def dataset_items(spec: str, channels: int, image_size: int, *, root: Optional[str] = None,
                  limit: Optional[int] = None) -> GalleryItems:
    from hetsearch.data import load_source

    source, split = parse_dataset_spec(spec)
    cfg = DataConfig(source=source, root=root, channels=channels, image_size=image_size)
    splits = load_source(cfg)
    if split not in splits:
        raise ConfigError(f"--dataset: {source} has splits {', '.join(splits)}, not {split!r}")
    data = splits[split]
    if limit is not None:
        data = data.subset(slice(0, limit))
    labels = [data.classes[i] for i in data.labels.tolist()]
    return GalleryItems(images=data.images, sources=list(data.sources), labels=labels,
                        origin={"kind": "dataset", "spec": spec, "root": root, "limit": limit})


def _decode_all(paths: list[Path], cfg: DataConfig, on_bad_image: str, progress: bool):
    arrays, kept, skipped = [], [], []
    iterator = paths
    if progress:
        from rich.progress import track

        iterator = track(paths, description="decoding", total=len(paths))
    for path in iterator:
        try:
            arrays.append(decode_image(path, cfg))
            kept.append(path)
        except DataError as exc:
            if on_bad_image == "fail":
                raise DataError(f"{exc} (use --on-bad-image skip to skip unreadable files)") from None
            log.warning("skipping %s", exc)
            skipped.append(str(path))
    if not arrays:
        raise DataError(f"no readable images among {len(paths)} file(s) ({len(skipped)} skipped)")
    return torch.from_numpy(np.stack(arrays)), kept, skipped


def folder_items(root: str | Path, channels: int, image_size: int, resize: str = "center_crop", *,
                 on_bad_image: str = "fail", progress: bool = False) -> GalleryItems:
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (--images expects a folder of image files)")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise DataError(f"{root}: no image files (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
    cfg = DataConfig(source="image_folder", channels=channels, image_size=image_size, resize=resize)
    images, kept, skipped = _decode_all(paths, cfg, on_bad_image, progress)
    labels = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in kept]
    return GalleryItems(images=images, sources=[str(p) for p in kept], labels=labels, skipped=skipped,
                        origin={"kind": "images", "root": str(root)})


def csv_items(csv_file: str | Path, channels: int, image_size: int, resize: str = "center_crop", *,
              on_bad_image: str = "fail", progress: bool = False) -> GalleryItems:
    csv_file = Path(csv_file).expanduser().absolute()
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = [name.strip() for name in reader.fieldnames or []]
    except FileNotFoundError:
        raise DataError(f"{csv_file}: CSV file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_file}: cannot read CSV ({exc})") from None
    if "path" not in header:
        raise DataError(f"{csv_file}: header {header} lacks 'path' (expected 'path[,label,...]')")
    entries = []
    for line_no, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row.get("path"):
            raise DataError(f"{csv_file}, line {line_no}: empty path")
        path = Path(row.pop("path")).expanduser()
        label = row.pop("label", "") or None
        entries.append((path if path.is_absolute() else csv_file.parent / path, label, row))
    if not entries:
        raise DataError(f"{csv_file}: no rows after the header")
    cfg = DataConfig(source="csv", channels=channels, image_size=image_size, resize=resize)
    images, kept, skipped = _decode_all([e[0] for e in entries], cfg, on_bad_image, progress)
    kept_set = {str(p) for p in kept}
    entries = [e for e in entries if str(e[0]) in kept_set]
    return GalleryItems(images=images, sources=[str(e[0]) for e in entries], labels=[e[1] for e in entries],
                        fields=[e[2] for e in entries], skipped=skipped,
                        origin={"kind": "csv", "file": str(csv_file)})
