"""Batched data augmentation on uint8 tensors, on whatever device the batch lives on.

Random crop with zero padding and horizontal flip are one gather: for each sample we build the
row and column indices into the padded image (a flip reverses the column indices), so a whole
batch is augmented with a single indexing op, no per-image Python loop and no CPU round trip.
Random numbers come from a CPU ``torch.Generator`` (reproducible across devices) and only the
small offset/flip vectors move to the batch's device.

Random erasing (Zhong et al., 2020) is one mask: each sample draws a rectangle (area fraction and
aspect ratio), and the rectangle is filled with uniform noise, again without a per-image loop.

Photo augmentation (off by default; each option draws random numbers only when it is on, so the
defaults reproduce the crop+flip+erase stream exactly):

* random-resized crop (as torchvision's ``RandomResizedCrop``): each sample draws a box of
  ``resized_crop_scale`` x the image area and log-uniform aspect ratio in ``resized_crop_ratio``
  (sides clipped to the image instead of torchvision's retry loop), at a uniform position, resized
  back to the full size with one bilinear ``grid_sample`` over the batch;
* colour jitter (as torchvision's ``ColorJitter``, in the fixed order brightness, contrast,
  saturation): per-sample factors uniform in ``[max(0, 1 - a), 1 + a]``; contrast blends with the
  image's mean grey, saturation with each pixel's grey (ITU-R 601 luma; colour images only).

Order in a batch: random-resized crop, pad-crop + flip, colour jitter, erasing. Values are on the
0..255 scale (uint8, or float on that scale); the output has the input's dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's "L" and data.transforms


def _pair(value, name: str, low: float, high: float | None) -> tuple[float, float]:
    """(min, max) with low < min <= max (<= high); ValueError naming ``name`` otherwise."""
    lo, hi = (float(v) for v in value)
    if not (low < lo <= hi and (high is None or hi <= high)):
        bound = f" <= {high:g}" if high is not None else ""
        raise ValueError(f"{name} must be (min, max) with {low:g} < min <= max{bound}, got {tuple(value)}")
    return lo, hi


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
        resized_crop_scale: (min, max) fraction of the image area of a random-resized crop
            (None disables it).
        resized_crop_ratio: (min, max) aspect ratio (width / height) of that crop.
        brightness, contrast, saturation: colour jitter strengths (0 disables each).
    """

    def __init__(self, crop_padding: int, hflip: bool = True, erase_prob: float = 0.0,
                 erase_area: tuple[float, float] = (0.02, 0.25),
                 resized_crop_scale: tuple[float, float] | None = None,
                 resized_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0) -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        if not 0.0 <= erase_prob <= 1.0:
            raise ValueError(f"erase_prob must be in [0, 1], got {erase_prob}")
        self.erase_area = _pair(erase_area, "erase_area", 0.0, 1.0)
        self.resized_crop_scale = (None if resized_crop_scale is None
                                   else _pair(resized_crop_scale, "resized_crop_scale", 0.0, 1.0))
        self.resized_crop_ratio = _pair(resized_crop_ratio, "resized_crop_ratio", 0.0, None)
        self.jitter = {"brightness": float(brightness), "contrast": float(contrast), "saturation": float(saturation)}
        for name, amount in self.jitter.items():
            if not amount >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {amount}")
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)
        self.erase_prob = float(erase_prob)

    def __repr__(self) -> str:
        photo = ""
        if self.resized_crop_scale is not None:
            photo += f", resized_crop_scale={self.resized_crop_scale}, resized_crop_ratio={self.resized_crop_ratio}"
        photo += "".join(f", {k}={v}" for k, v in self.jitter.items() if v)
        return (f"BatchAugment(crop_padding={self.crop_padding}, hflip={self.hflip}, "
                f"erase_prob={self.erase_prob}, erase_area={self.erase_area}{photo})")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"BatchAugment expects (N, C, H, W), got shape {tuple(x.shape)}")
        if self.resized_crop_scale is not None and len(x):
            x = self._resized_crop(x, generator)
        x = self._crop_and_flip(x, generator)
        if any(self.jitter.values()) and len(x):
            x = self._colour_jitter(x, generator)
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

    def _resized_crop(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        lo, hi = self.resized_crop_scale
        area = (lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)) * (h * w)
        r_lo, r_hi = (math.log(v) for v in self.resized_crop_ratio)
        ratio = (r_lo + (r_hi - r_lo) * torch.rand(n, generator=generator, dtype=torch.float64)).exp()
        box_w = (area * ratio).sqrt().clamp(1, w)
        box_h = (area / ratio).sqrt().clamp(1, h)
        left = torch.rand(n, generator=generator, dtype=torch.float64) * (w - box_w)
        top = torch.rand(n, generator=generator, dtype=torch.float64) * (h - box_h)
        # output edge coordinates [-1, 1] -> the box's edges, in grid_sample's normalised input
        # coordinates (align_corners=False: -1 and 1 are the outer edges of the border pixels)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 2] = box_w / w, (2 * left + box_w) / w - 1
        theta[:, 1, 1], theta[:, 1, 2] = box_h / h, (2 * top + box_h) / h - 1
        values = x.float()
        grid = F.affine_grid(theta.to(x.device, values.dtype), [n, c, h, w], align_corners=False)
        out = F.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return _like(out, x)

    def _colour_jitter(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c = x.shape[:2]
        factors = {}
        for name, amount in self.jitter.items():
            if amount:  # drawn only when on, in a fixed order
                low = max(0.0, 1.0 - amount)
                factors[name] = (low + (1.0 + amount - low) * torch.rand(n, generator=generator)).view(n, 1, 1, 1)
        y = x.float()
        factors = {name: f.to(x.device) for name, f in factors.items()}
        if "brightness" in factors:
            y = (y * factors["brightness"]).clamp_(0, 255)
        if "contrast" in factors:
            mean = _grey(y).mean(dim=(1, 2, 3), keepdim=True)
            y = ((y - mean) * factors["contrast"] + mean).clamp_(0, 255)
        if "saturation" in factors and c == 3:
            grey = _grey(y)
            y = ((y - grey) * factors["saturation"] + grey).clamp_(0, 255)
        return _like(y, x)


def _grey(y: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of float (N, C, H, W) (the image itself when C = 1)."""
    if y.shape[1] == 1:
        return y
    weights = torch.tensor(LUMA, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
    return (y * weights).sum(1, keepdim=True)


def _like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Float result ``y`` back in ``x``'s dtype (uint8: rounded and clamped to 0..255)."""
    if x.dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(x.dtype)
