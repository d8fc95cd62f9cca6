"""Batched data augmentation on uint8 tensors, on whatever device the batch lives on.

Random crop with zero padding and horizontal flip are one gather: for each sample we build the
row and column indices into the padded image (a flip reverses the column indices), so a whole
batch is augmented with a single indexing op, no per-image Python loop and no CPU round trip.
Random numbers come from a CPU ``torch.Generator`` (reproducible across devices) and only the
small offset/flip vectors move to the batch's device.

Random erasing (Zhong et al., 2020) is one mask: each sample draws a rectangle (area fraction and
aspect ratio), and the rectangle is filled with uniform noise, again without a per-image loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class BatchAugment:
    """``aug(x_uint8, generator) -> x_uint8`` of the same shape.

    Args:
        crop_padding: pad each side with this many zero pixels, then crop back to the original
            size at a random per-sample offset (0 disables cropping). No default here: the one
            default is the config's (`hetsearch.config.AugmentConfig.crop_padding`).
        hflip: flip each sample horizontally with probability 1/2.
        erase_prob: probability that a sample gets one random rectangle replaced by noise
            (0 disables random erasing).
        erase_area: (min, max) fraction of the image area an erased rectangle covers; its aspect
            ratio is log-uniform in [0.3, 1/0.3].
    """

    def __init__(self, crop_padding: int, hflip: bool = True, erase_prob: float = 0.0,
                 erase_area: tuple[float, float] = (0.02, 0.25)) -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        if not 0.0 <= erase_prob <= 1.0:
            raise ValueError(f"erase_prob must be in [0, 1], got {erase_prob}")
        lo, hi = (float(v) for v in erase_area)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"erase_area must be (min, max) with 0 < min <= max <= 1, got {erase_area}")
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)
        self.erase_prob = float(erase_prob)
        self.erase_area = (lo, hi)

    def __repr__(self) -> str:
        return (f"BatchAugment(crop_padding={self.crop_padding}, hflip={self.hflip}, "
                f"erase_prob={self.erase_prob}, erase_area={self.erase_area})")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"BatchAugment expects (N, C, H, W), got shape {tuple(x.shape)}")
        x = self._crop_and_flip(x, generator)
        return self._erase(x, generator) if self.erase_prob > 0 and len(x) else x

    def _crop_and_flip(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
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

    def _erase(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        apply = torch.rand(n, generator=generator) < self.erase_prob
        lo, hi = self.erase_area
        area = (lo + (hi - lo) * torch.rand(n, generator=generator)) * (h * w)
        log_ratio = math.log(0.3) + (2 * math.log(1 / 0.3)) * torch.rand(n, generator=generator)
        ratio = log_ratio.exp()
        eh = (area * ratio).sqrt().round().clamp(1, h).long()
        ew = (area / ratio).sqrt().round().clamp(1, w).long()
        top = (torch.rand(n, generator=generator) * (h - eh + 1)).floor().long()
        left = (torch.rand(n, generator=generator) * (w - ew + 1)).floor().long()
        noise = torch.randint(0, 256, (n, c, h, w), generator=generator, dtype=torch.uint8)
        device = x.device
        rows = torch.arange(h).view(1, h)
        cols = torch.arange(w).view(1, w)
        in_rows = (rows >= top.view(n, 1)) & (rows < (top + eh).view(n, 1))  # (N, H)
        in_cols = (cols >= left.view(n, 1)) & (cols < (left + ew).view(n, 1))  # (N, W)
        mask = (in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w)) & apply.view(n, 1, 1, 1)
        return torch.where(mask.to(device), noise.to(device, dtype=x.dtype), x)
