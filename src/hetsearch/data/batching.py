"""Mini-batches sliced from in-memory tensors, optionally sharded for DDP.

Data sets that fit in memory live there as tensors (possibly already on the GPU), so a DataLoader
with worker processes would only add copies; a permutation and index slicing is all that is
needed. A streamed training split (`hetsearch.data.loader.StreamedImages`) takes the same
permutation and decodes each batch's files in DataLoader workers instead.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch


def count_batches(num_items: int, batch_size: int, drop_last: bool = True, world_size: int = 1) -> int:
    """Batches per rank per epoch that `iterate_batches` yields (e.g. for LR schedules)."""
    per_rank = num_items // world_size if drop_last else math.ceil(num_items / world_size)
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


def iterate_batches(
    images,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | None,
    shuffle: bool = True,
    drop_last: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images[idx], labels[idx])`` batches for one epoch.

    With ``world_size > 1`` every rank must pass a generator in the same state (e.g. seeded
    with ``seed + epoch``): all ranks draw the same permutation and rank ``r`` takes positions
    ``r, r + world_size, ...`` of it, so shards are disjoint and, together, cover the epoch.
    Every rank gets the same number of batches (DDP would hang otherwise): with ``drop_last``
    the permutation is cut to a multiple of ``world_size`` (and each shard to whole batches);
    without it, it is padded by wrapping around, as ``DistributedSampler`` does, so a few items
    may appear on two ranks, and the last batch may be short.
    """
    n = len(images)
    if labels.shape[0] != n:
        raise ValueError(f"iterate_batches: {n} images but {labels.shape[0]} labels")
    if batch_size < 1:
        raise ValueError(f"iterate_batches: batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"iterate_batches: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if shuffle and generator is None:
        raise ValueError("iterate_batches: shuffle=True needs a torch.Generator (no global RNG state)")

    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world_size > 1:
        if drop_last:
            order = order[: (n // world_size) * world_size]
        elif n % world_size and n > 0:
            pad = world_size - n % world_size
            order = torch.cat([order, order.repeat(math.ceil(pad / n))[:pad]])
        order = order[rank::world_size]
    if hasattr(images, "batches"):  # streamed from disk (hetsearch.data.loader.StreamedImages)
        return images.batches(labels, order, batch_size, drop_last)
    return _batches(images, labels, order, batch_size, drop_last)


def _batches(
    images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int, drop_last: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    # A nested generator so that argument errors above raise at call time, not at first next().
    stop = (len(order) // batch_size) * batch_size if drop_last else len(order)
    image_order = order.to(images.device)
    label_order = order.to(labels.device)
    for start in range(0, stop, batch_size):
        yield images[image_order[start : start + batch_size]], labels[label_order[start : start + batch_size]]
