"""A data set's splits written out as an image folder the own-images path reads back
(``data.source: image_folder``): ``ROOT/{train,test}/CLASS/NNNNN.png`` for official splits
(``ROOT/CLASS/*`` for a data set that is one pool).

Files are numbered by their position in the split, so ``ROOT/test/cat/00003.png`` is item 3 of
the test split. The folder is written next to ``ROOT`` and renamed into place when complete, so an
interrupted export never leaves a half-written ROOT behind.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable

from PIL import Image

from hetsearch.data.imageset import ImageSet
from hetsearch.errors import DataError

log = logging.getLogger(__name__)


def class_dir_name(name: str) -> str:
    """A class name usable as one folder name (path separators and a leading dot replaced)."""
    safe = name.replace("/", "-").replace("\\", "-").strip()
    return ("_" + safe[1:] if safe.startswith(".") else safe) or "_"


def _write_split(images: ImageSet, folder: Path) -> int:
    width = max(5, len(str(max(len(images) - 1, 0))))
    dirs = [folder / class_dir_name(c) for c in images.classes]
    if len(set(dirs)) != len(dirs):
        raise DataError(f"class names {images.classes} collide as folder names")
    pixels = images.images.cpu().permute(0, 2, 3, 1).numpy()  # N, H, W, C
    labels = images.labels.cpu().tolist()
    for label in sorted(set(labels)):
        dirs[label].mkdir(parents=True, exist_ok=True)
    for i, (array, label) in enumerate(zip(pixels, labels)):
        if label < 0:
            raise DataError(f"item {i} ({images.sources[i]}) is unlabelled; only labelled sets export as CLASS folders")
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(dirs[label] / f"{i:0{width}d}.png")
    return len(labels)


def export_image_folder(splits: dict[str, ImageSet], out: Path,
                        say: Callable[[str], None] = log.info) -> dict[str, int]:
    """Write ``splits`` under ``out`` (must not exist or be empty); return images written per split."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder; remove it or choose another output folder")
    partial = out.with_name(f".{out.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    counts = {}
    try:
        for name, images in splits.items():
            target = partial if name == "all" else partial / name
            counts[name] = _write_split(images, target)
            say(f"{name}: {counts[name]} images, {images.num_classes} classes")
        if out.exists():
            out.rmdir()
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return counts
