"""The user's own images: an ImageFolder tree or a CSV of ``path,label`` rows.

Every file is decoded once at load time with Pillow (a plain loop: it runs once per run, and
keeps error reporting per file simple) and brought to the configured channels and size (see
`hetsearch.data.transforms`). An unreadable file is named in the error (``on_bad_image: fail``)
or skipped and listed in ``ImageSet.skipped`` (``on_bad_image: skip``).
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hetsearch.data.config import DataConfig
from hetsearch.data.imageset import ImageSet
from hetsearch.data.transforms import fit_pil_image
from hetsearch.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)


def _class_sort_key(name: str) -> tuple:
    """Numeric class names sort by value ("2" before "10"), others alphabetically."""
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def decode_image(path: Path, cfg: DataConfig) -> np.ndarray:
    """uint8 (C, H, W) for one file; raises DataError naming the file when it cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decode now: a truncated file fails here, not later
                return fit_pil_image(img, cfg.channels, cfg.image_size, cfg.resize)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None


def _build(items: list[tuple[Path, int]], classes: list[str], cfg: DataConfig, what: str) -> ImageSet:
    """Decode ``items`` (path, label) applying the bad-image policy."""
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[str] = []
    skipped: list[str] = []
    for path, label in items:
        try:
            arrays.append(decode_image(path, cfg))
        except DataError as exc:
            if cfg.on_bad_image == "fail":
                raise DataError(f"{exc} (set data.on_bad_image=skip to skip unreadable files)") from None
            skipped.append(str(path))
            log.warning("skipping %s", exc)
            continue
        labels.append(label)
        sources.append(str(path))
    if skipped:
        log.warning("%s: skipped %d unreadable image file(s)", what, len(skipped))
    if not arrays:
        raise DataError(f"{what}: no readable images (skipped {len(skipped)} unreadable file(s))")
    return ImageSet(
        images=torch.from_numpy(np.stack(arrays)),
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=classes,
        sources=sources,
        skipped=skipped,
    )


def load_image_folder(cfg: DataConfig) -> dict[str, ImageSet]:
    """``{"all": ImageSet}`` from ``cfg.root``: one sub-folder per class, images found recursively.

    Class names are the sub-folder names (numeric names sorted by value); hidden files and
    files with non-image extensions are ignored; sub-folders without images are left out.
    """
    if cfg.root is None:
        raise ConfigError("data.root: required for data.source 'image_folder' (a folder with one sub-folder per class)")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (data.root; expected one sub-folder per class)")
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: _class_sort_key(d.name),
    )
    per_class: list[tuple[str, list[Path]]] = []
    for class_dir in class_dirs:
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
        )
        if files:
            per_class.append((class_dir.name, files))
        else:
            log.warning("%s: no image files, class left out", class_dir)
    if not per_class:
        raise DataError(
            f"{root}: no class sub-folders with images (expected ROOT/CLASS_NAME/IMAGE with extensions "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    classes = [name for name, _ in per_class]
    items = [(path, label) for label, (_, files) in enumerate(per_class) for path in files]
    return {"all": _build(items, classes, cfg, str(root))}


def _csv_file(cfg: DataConfig) -> Path:
    if cfg.csv_path is not None:
        return Path(cfg.csv_path).expanduser()
    if cfg.root is not None and Path(cfg.root).suffix.lower() == ".csv":
        return Path(cfg.root).expanduser()
    raise ConfigError("data.csv_path: required for data.source 'csv' (a CSV file with header 'path,label')")


def load_csv(cfg: DataConfig) -> dict[str, ImageSet]:
    """``{"all": ImageSet}`` from a CSV with header row containing ``path`` and ``label``.

    Relative paths are resolved relative to the CSV file's folder (so the CSV and its images can
    move together); labels are class names (numeric names sorted by value).
    """
    csv_file = _csv_file(cfg)
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fieldnames = list(reader.fieldnames or [])
    except FileNotFoundError:
        raise DataError(f"{csv_file}: CSV file not found (data.csv_path)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_file}: cannot read CSV ({exc})") from None
    header = [name.strip() for name in fieldnames]
    if "path" not in header or "label" not in header:
        raise DataError(f"{csv_file}: header {header} lacks 'path' and/or 'label' (expected 'path,label')")
    if not rows:
        raise DataError(f"{csv_file}: no rows after the header (expected one 'path,label' row per image)")
    base = csv_file.parent
    entries: list[tuple[Path, str]] = []
    for line_no, row in enumerate(rows, start=2):
        row = {(k.strip() if k else k): v for k, v in row.items()}
        path_text = (row.get("path") or "").strip()
        label = (row.get("label") or "").strip()
        if not path_text or not label:
            raise DataError(f"{csv_file}, line {line_no}: empty path or label")
        path = Path(path_text).expanduser()
        entries.append((path if path.is_absolute() else base / path, label))
    classes = sorted({label for _, label in entries}, key=_class_sort_key)
    index = {name: i for i, name in enumerate(classes)}
    items = [(path, index[label]) for path, label in entries]
    return {"all": _build(items, classes, cfg, str(csv_file))}
