"""`FileSet`: a labelled list of image files, decoded only when needed.

Sources that read files (image folders, CSV) list their items as a FileSet; `make_splits` splits
it by labels alone, so only the items a run uses are ever decoded. A FileSet becomes an in-memory
`ImageSet` with `materialize()` (decoding in parallel DataLoader workers when asked), or stays
on disk and is decoded batch by batch while training (`hetsearch.data.loader`, ``data.storage``).

Decoding never raises inside a worker process: errors come back as values, so the message the
user sees is ours (file name, what to do), not a worker traceback.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hetsearch.data.imageset import ImageSet, Index, as_positions
from hetsearch.data.transforms import fit_pil_image
from hetsearch.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)


@dataclass(frozen=True)
class DecodeSpec:
    """How a file becomes a uint8 (C, H, W) array (see `hetsearch.data.transforms`)."""

    channels: int
    image_size: int
    resize: str = "center_crop"
    background: tuple[int, int, int] = (255, 255, 255)
    on_bad_image: str = "fail"

    @classmethod
    def from_config(cls, cfg) -> "DecodeSpec":
        return cls(channels=cfg.channels, image_size=cfg.image_size, resize=cfg.resize,
                   background=cfg.background_rgb(), on_bad_image=cfg.on_bad_image)

    @property
    def item_bytes(self) -> int:
        return self.channels * self.image_size * self.image_size


def decode_image(path: str | Path, spec: DecodeSpec) -> np.ndarray:
    """uint8 (C, H, W) for one file; raises DataError naming the file when it cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                # JPEG: decode at the smallest DCT scale (1/2, 1/4, 1/8) still >= the model input in
                # both sides, as the server does (data/decode.py): 256 px -> 64 px costs a fifth.
                img.draft(img.mode, (spec.image_size, spec.image_size))
                img.load()  # decode now: a truncated file fails here, not later
                return fit_pil_image(img, spec.channels, spec.image_size, spec.resize, background=spec.background)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None


def decode_many(paths: Sequence[str], spec: DecodeSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images uint8 (K, C, H, W), ok bool (len(paths),), error messages)``; never raises DataError."""
    arrays, ok, errors = [], np.zeros(len(paths), dtype=bool), []
    for i, path in enumerate(paths):
        try:
            arrays.append(decode_image(path, spec))
            ok[i] = True
        except DataError as exc:
            errors.append(str(exc))
    size = spec.image_size
    images = np.stack(arrays) if arrays else np.zeros((0, spec.channels, size, size), dtype=np.uint8)
    return images, ok, errors


def default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1)))


class _ChunkDataset(torch.utils.data.Dataset):
    """Chunk i = the files of chunk i, decoded (errors as values)."""

    def __init__(self, paths: list[str], spec: DecodeSpec, chunk: int):
        self.paths, self.spec, self.chunk = paths, spec, chunk

    def __len__(self) -> int:
        return (len(self.paths) + self.chunk - 1) // self.chunk

    def __getitem__(self, i: int):
        images, ok, errors = decode_many(self.paths[i * self.chunk:(i + 1) * self.chunk], self.spec)
        return torch.from_numpy(images), torch.from_numpy(ok), errors


def iterate_decoded(paths: list[str], spec: DecodeSpec, *, num_workers: int = 0, chunk: int = 256):
    """Yield ``(images uint8 tensor, ok mask, errors)`` per chunk of ``paths``, in order."""
    dataset = _ChunkDataset(paths, spec, chunk)
    if num_workers <= 0 or len(dataset) <= 1:
        for i in range(len(dataset)):
            yield dataset[i]
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                         prefetch_factor=2, persistent_workers=False)
    yield from loader


@dataclass
class FileSet:
    """Image files with labels; the lazy counterpart of `ImageSet`.

    Attributes:
        paths: one file per item.
        labels: int64 (N,), indices into ``classes`` (-1 for unlabelled items).
        classes: class names (index -> name).
        decode: how each file becomes a uint8 (C, H, W) array.
        skipped: unreadable files left out (only after `materialize` with ``on_bad_image: skip``).
    """

    paths: list[str]
    labels: torch.Tensor
    classes: list[str]
    decode: DecodeSpec
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1 or self.labels.shape[0] != len(self.paths):
            raise ValueError(f"FileSet: {len(self.paths)} paths need int64 labels of that length, got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def sources(self) -> list[str]:
        return self.paths

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def nbytes(self) -> int:
        """Size of the decoded uint8 pixels, were the whole set held in memory."""
        return len(self) * self.decode.item_bytes

    @property
    def images(self) -> torch.Tensor:
        """All items decoded (once, then cached): for consumers that need pixels in memory, such as
        an evaluation whose gallery is a streamed training split. Prefer `materialize`."""
        cached = getattr(self, "_images", None)
        if cached is None:
            loaded = self.materialize(num_workers=None if len(self) >= 2048 else 0, what="streamed set")
            if loaded.skipped:
                raise DataError(f"{loaded.skipped[0]}: unreadable, and {len(loaded.skipped) - 1} more; remove them "
                                "(a streamed set evaluated in memory must decode completely)")
            cached = self._images = loaded.images
        return cached

    def subset(self, idx: Index) -> "FileSet":
        index = as_positions(idx, len(self))
        positions = index.tolist()
        return FileSet(paths=[self.paths[i] for i in positions], labels=self.labels[index], classes=list(self.classes),
                       decode=self.decode)

    def materialize(self, *, num_workers: Optional[int] = 0, what: str = "") -> ImageSet:
        """Decode every file into an in-memory ImageSet, applying ``decode.on_bad_image``.

        The pixels are written into one preallocated tensor (peak memory = the decoded set, not
        twice it); with ``num_workers`` > 0 files are decoded in DataLoader worker processes.
        """
        workers = default_workers() if num_workers is None else num_workers
        spec = self.decode
        if len(self) == 0:
            return ImageSet(images=torch.zeros((0, spec.channels, spec.image_size, spec.image_size), dtype=torch.uint8),
                            labels=self.labels.clone(), classes=list(self.classes), sources=[])
        out = torch.empty((len(self), spec.channels, spec.image_size, spec.image_size), dtype=torch.uint8)
        keep = np.zeros(len(self), dtype=bool)
        start = filled = 0
        for images, ok, chunk_errors in iterate_decoded(self.paths, spec, num_workers=workers, chunk=256):
            n = int(ok.shape[0])
            if chunk_errors:
                if spec.on_bad_image == "fail":
                    raise DataError(f"{chunk_errors[0]} (set data.on_bad_image=skip to skip unreadable files)")
                for message in chunk_errors:
                    log.warning("skipping %s", message)
            keep[start:start + n] = ok.numpy()
            out[filled:filled + len(images)] = images
            filled += len(images)
            start += n
        skipped = [p for p, k in zip(self.paths, keep) if not k]
        if skipped:
            log.warning("%s: skipped %d unreadable image file(s)", what or "data", len(skipped))
        if not keep.any():
            raise DataError(f"{what or 'data'}: no readable images among {len(self)} file(s) "
                            f"(skipped {len(skipped)} unreadable file(s))")
        index = torch.from_numpy(np.nonzero(keep)[0])
        return ImageSet(images=out[:filled] if skipped else out, labels=self.labels[index], classes=list(self.classes),
                        sources=[self.paths[i] for i in index.tolist()], skipped=skipped)
