"""Batched data augmentation on uint8 tensors, on whatever device the batch lives on.

Random crop with zero padding and horizontal flip are one gather: for each sample we build the
row and column indices into the padded image (a flip reverses the column indices), so a whole
batch is augmented with a single indexing op, no per-image Python loop and no CPU round trip.
Random numbers come from a CPU ``torch.Generator`` (reproducible across devices) and only the
small offset/flip vectors move to the batch's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class BatchAugment:
    """``aug(x_uint8, generator) -> x_uint8`` of the same shape.

    Args:
        crop_padding: pad each side with this many zero pixels, then crop back to the original
            size at a random per-sample offset (0 disables cropping).
        hflip: flip each sample horizontally with probability 1/2.
    """

    def __init__(self, crop_padding: int = 4, hflip: bool = True) -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)

    def __repr__(self) -> str:
        return f"BatchAugment(crop_padding={self.crop_padding}, hflip={self.hflip})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"BatchAugment expects (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        p = self.crop_padding
        if n == 0 or (p == 0 and not self.hflip):
            return x.clone()
        # Random draws on CPU, in a fixed order, so results do not depend on the device.
        if p > 0:
            offsets = torch.randint(0, 2 * p + 1, (2, n), generator=generator)
        else:
            offsets = torch.zeros((2, n), dtype=torch.int64)
        if self.hflip:
            flips = torch.randint(0, 2, (n,), generator=generator).bool()
        else:
            flips = torch.zeros(n, dtype=torch.bool)
        device = x.device
        offsets, flips = offsets.to(device), flips.to(device)
        padded = F.pad(x, (p, p, p, p)) if p > 0 else x
        rows = offsets[0].unsqueeze(1) + torch.arange(h, device=device)  # (N, H)
        col_base = torch.arange(w, device=device)
        col_base = torch.where(flips.unsqueeze(1), (w - 1) - col_base, col_base)  # (N, W)
        cols = offsets[1].unsqueeze(1) + col_base
        batch_idx = torch.arange(n, device=device).view(n, 1, 1, 1)
        chan_idx = torch.arange(c, device=device).view(1, c, 1, 1)
        return padded[batch_idx, chan_idx, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
