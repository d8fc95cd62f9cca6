"""`ImageSet`: a labelled set of images held in memory as one uint8 tensor.

The fast path for sets that fit in memory (Fashion-MNIST: 70k x 28 x 28 bytes = 55 MB): decode
once, then training slices tensors instead of decoding files per step. Larger image folders stay
on disk as a `FileSet` (hetsearch.data.fileset) and are streamed (``data.storage``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import torch

Index = Union[torch.Tensor, np.ndarray, Sequence[int], slice]


def as_positions(idx: Index, length: int) -> torch.Tensor:
    """Integer positions (int64, CPU) of ``idx``: integer indices, a boolean mask or a slice."""
    if isinstance(idx, slice):
        return torch.arange(length)[idx]
    index = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
    if index.dtype == torch.bool:
        index = index.nonzero().flatten()
    return index.to(torch.int64).flatten().cpu()


@dataclass
class ImageSet:
    """Images, labels and where each item came from.

    Attributes:
        images: uint8 tensor (N, C, H, W), C = 1 or 3.
        labels: int64 tensor (N,), indices into ``classes`` (-1: unlabelled). After `make_splits` every set uses
            the full class list, so labels of training and query sets are comparable.
        classes: class names (index -> name).
        sources: per item, the file path or e.g. ``"fashion_mnist:train:123"`` (for reports and
            for tracing a bad retrieval back to its file).
        skipped: paths of unreadable files skipped while loading (``on_bad_image: skip``); only
            set on a freshly loaded set, `subset` starts a new, empty list.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    sources: list[str]
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Programming errors, not user input: a plain ValueError is the right kind.
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"ImageSet.images: expected uint8 (N, C, H, W) with C in (1, 3), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"ImageSet.labels: expected int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        n = self.images.shape[0]
        if self.labels.shape[0] != n or len(self.sources) != n:
            raise ValueError(
                f"ImageSet: {n} images, {self.labels.shape[0]} labels and {len(self.sources)} sources; "
                "expected equal counts"
            )
        if n and (int(self.labels.min()) < -1 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(f"ImageSet.labels: values must lie in [0, {len(self.classes)}) (or -1: unlabelled)")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx: Index) -> "ImageSet":
        """The items at ``idx`` (integer indices, a boolean mask or a slice), in that order."""
        index = as_positions(idx, len(self))
        positions = index.tolist()
        return ImageSet(
            images=self.images[index.to(self.images.device)],
            labels=self.labels[index.to(self.labels.device)],
            classes=list(self.classes),
            sources=[self.sources[i] for i in positions],
        )

    def class_counts(self) -> dict[str, int]:
        """Items per class name (classes with no items are left out)."""
        labels = self.labels.cpu()
        counts = torch.bincount(labels[labels >= 0], minlength=len(self.classes)).tolist()
        return {name: c for name, c in zip(self.classes, counts) if c}
