"""Recompute BatchNorm running statistics for the current weights ("precise BN").

During training, BatchNorm normalises with the batch's statistics, but an evaluated (or saved)
model uses running averages updated with momentum 0.1, i.e. mostly the statistics of the last ~10
batches' *earlier* weights. When the weights move fast (a high learning rate, a sharp
compatibility loss) the averages lag the weights, and the eval-mode network is not the one that
was trained. Homogeneous retrieval barely notices (query and gallery side shift together), but a
query model searched against a *fixed* gallery embedding space does: its embeddings (the output
of a BatchNorm1d in the embedding head) are offset from where training put them, and M(q, g)
drops, by tens of points in unlucky epochs. Recomputing the statistics over a few batches with the
final weights removes the lag (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

The batches are training images under the training augmentation (`augment`), i.e. the
distribution the weights were trained to normalise: statistics of un-augmented images would remove
the lag but add a shift (crops bring black borders), and measured worse at the end of training.
The draw is seeded, so a resumed run recalibrates exactly as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images_uint8: torch.Tensor, *, batches: int, batch_size: int,
                          seed: int, augment=None, channels_last: bool = False) -> None:
    """Replace every BatchNorm's running mean/var by its average over `batches` seeded batches
    (`augment(x_uint8, generator)` applied to each, when given)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0 or len(images_uint8) == 0:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    generator = torch.Generator().manual_seed(int(seed))
    size = min(batch_size, len(images_uint8))
    try:
        for _ in range(batches):
            idx = torch.randint(0, len(images_uint8), (size,), generator=generator).to(images_uint8.device)
            x = images_uint8[idx]
            x = (augment(x, generator) if augment is not None else x).float().div_(255)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            model(x, normalize=False)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
