"""Training batches from in-memory tensors or streamed from disk, behind one interface.

`training_images(train_set, device, cfg)` returns ``(images, labels)`` for the trainer:

* an `ImageSet` (in memory): its uint8 tensor moved to the device once, sliced per batch;
* a `FileSet` (``data.storage: stream``): a `StreamedImages` that `iterate_batches` recognises.
  Each batch's files are decoded (and resized, alpha composited) in DataLoader worker
  processes, several batches ahead of the training step; only those batches are ever in memory.

Both paths draw the same permutation from the epoch's generator, so the batch order (and, for
identical decoded pixels, the whole training run, augmentation included) is the same whichever
path holds the images. Augmentation stays the batched uint8 op of `BatchAugment` on the batch's
device (one gather per batch: cheap next to decoding). An unreadable file fails with its name
(``on_bad_image: fail``) or is dropped from its batch with a warning (``skip``).
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Optional

import torch

from hetsearch.data.fileset import DecodeSpec, FileSet, decode_many, default_workers
from hetsearch.data.imageset import ImageSet
from hetsearch.errors import DataError

log = logging.getLogger(__name__)


class _BatchFiles(torch.utils.data.Dataset):
    """Item i = the decoded files of batch i (errors returned as values, never raised in a worker)."""

    def __init__(self, paths: list[str], batches: list[torch.Tensor], decode: DecodeSpec):
        self.paths, self.batches, self.decode = paths, batches, decode

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        images, ok, errors = decode_many([self.paths[j] for j in self.batches[i].tolist()], self.decode)
        return torch.from_numpy(images), torch.from_numpy(ok), errors


def default_stream_workers(device: torch.device) -> int:
    """Decoding workers for training: on a CPU device they share the cores with the trainer's threads.

    Decoding a 64 px PNG costs about an eighth of a training step's CPU per image (bench/streaming.py:
    0.3 vs 2.4 ms), so half the cores keep the trainer fed; more only take cores from it. An
    accelerator leaves the CPUs to the workers.
    """
    if torch.device(device).type == "cpu":
        return max(1, (os.cpu_count() or 1) // 2)
    return default_workers()


class StreamedImages:
    """The training split on disk: what the trainer holds instead of a uint8 tensor when streaming.

    Attributes mirror the tensor's where the trainer reads them (``shape``, ``device``, ``len``).
    """

    def __init__(self, files: FileSet, device: torch.device, num_workers: Optional[int] = None,
                 prefetch_batches: int = 4):
        self.files = files
        self.device = torch.device(device)
        self.num_workers = default_stream_workers(self.device) if num_workers is None else int(num_workers)
        self.prefetch_batches = prefetch_batches
        d = files.decode
        self.shape = torch.Size((len(files), d.channels, d.image_size, d.image_size))

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, labels: torch.Tensor, order: torch.Tensor, batch_size: int,
                drop_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images uint8 on the device, labels[batch])`` for consecutive ``batch_size`` chunks of ``order``."""
        stop = (len(order) // batch_size) * batch_size if drop_last else len(order)
        chunks = [order[s:s + batch_size].cpu() for s in range(0, stop, batch_size)]
        dataset = _BatchFiles(self.files.paths, chunks, self.files.decode)
        workers = min(self.num_workers, len(chunks))
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, shuffle=False, num_workers=workers,
            prefetch_factor=max(1, self.prefetch_batches // max(1, workers)) if workers else None,
            pin_memory=self.device.type == "cuda")
        for chunk, (images, ok, errors) in zip(chunks, loader):
            if errors:
                if self.files.decode.on_bad_image == "fail":
                    raise DataError(f"{errors[0]} (set data.on_bad_image=skip to skip unreadable files)")
                for message in errors:
                    log.warning("skipping %s", message)
                chunk = chunk[ok]
            if len(chunk) == 0:
                continue
            yield images.to(self.device, non_blocking=True), labels[chunk.to(labels.device)]


def training_images(train_set: ImageSet | FileSet, device: torch.device, num_workers: Optional[int] = None):
    """``(images, labels)`` for `iterate_batches`: a device tensor, or `StreamedImages` for a FileSet."""
    labels = train_set.labels.to(device)
    if isinstance(train_set, FileSet):
        return StreamedImages(train_set, device, num_workers=num_workers), labels
    return train_set.images.to(device), labels
