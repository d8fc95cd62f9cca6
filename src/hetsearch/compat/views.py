"""Deterministic augmented views: view v of training image i is a pure function of (seed, i, v).

The gallery embedding bank stores φ_g of K views of every training image; a query model trained
against it must see *exactly* the pixels whose gallery embedding is its positive. Drawing crop
offsets and flips from a counter-based hash of (seed, item index, view index) instead of a random
stream makes view v of image i reproducible anywhere (bank build, any query run, any device,
any batch composition) without storing the views.

View 0 is the image as is (what a gallery index holds); views 1..K-1 are random crops (zero
padding `crop_padding`, then crop back) with a horizontal flip with probability 1/2, the same
family as the trainer's `BatchAugment`. Random erasing is not part of the family.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (int64 tensors holding values in [0, 2^32)); no overflow in int64."""
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK32
    return x ^ (x >> 16)


def view_hash(seed: int, indices: torch.Tensor, views: torch.Tensor, salt: int) -> torch.Tensor:
    """Uniform-looking int64 in [0, 2^32) per (seed, index, view, salt)."""
    h = _mix32(torch.full_like(indices, int(seed) & _MASK32))
    h = _mix32(h ^ (indices.to(torch.int64) & _MASK32))
    h = _mix32(h ^ (views.to(torch.int64) & _MASK32))
    return _mix32(h ^ (int(salt) & _MASK32))


class ItemViews:
    """`views(images_uint8, indices, view_ids) -> uint8` of the same shape (on the images' device)."""

    def __init__(self, seed: int = 0, crop_padding: int = 2, hflip: bool = True):
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.seed, self.crop_padding, self.hflip = int(seed), int(crop_padding), bool(hflip)

    @property
    def signature(self) -> dict:
        """What determines the pixels of every view (part of a bank's key)."""
        return {"view_seed": self.seed, "crop_padding": self.crop_padding, "hflip": self.hflip,
                "family": "crop+flip/v1"}

    def params(self, indices: torch.Tensor, view_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row offset, column offset, flip) of each (item, view): the definition of the views."""
        p = self.crop_padding
        augmented = view_ids > 0
        if p > 0:
            dy = torch.where(augmented, view_hash(self.seed, indices, view_ids, 1) % (2 * p + 1), p)
            dx = torch.where(augmented, view_hash(self.seed, indices, view_ids, 2) % (2 * p + 1), p)
        else:
            dy = dx = torch.zeros_like(indices)
        flips = augmented & (view_hash(self.seed, indices, view_ids, 3) % 2 == 1) if self.hflip \
            else torch.zeros_like(indices, dtype=torch.bool)
        return dy, dx, flips

    def tabulate(self, num_items: int, num_views: int, device: torch.device | str) -> None:
        """Precompute the parameters of every (item, view) on `device` (a few bytes each), so that
        a training step gathers them instead of hashing (fewer kernels per step on a GPU)."""
        items = torch.arange(num_items, device=device).repeat_interleave(num_views)
        views = torch.arange(num_views, device=device).repeat(num_items)
        dy, dx, flips = self.params(items, views)
        self._table = (num_views, torch.stack([dy, dx, flips.long()], 1).to(torch.int16).view(num_items, num_views, 3))

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, view_ids: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"ItemViews expects (N, C, H, W), got shape {tuple(images.shape)}")
        n, c, h, w = images.shape
        device = images.device
        indices = indices.to(device=device, dtype=torch.int64)
        view_ids = view_ids.to(device=device, dtype=torch.int64)
        if indices.shape != (n,) or view_ids.shape != (n,):
            raise ValueError(f"ItemViews: {n} images need {n} indices and view ids, got "
                             f"{tuple(indices.shape)} and {tuple(view_ids.shape)}")
        p = self.crop_padding
        table = getattr(self, "_table", None)
        if table is not None and table[1].device == device:
            row = table[1][indices, view_ids].long()
            dy, dx, flips = row[:, 0], row[:, 1], row[:, 2].bool()
        else:
            dy, dx, flips = self.params(indices, view_ids)
        padded = F.pad(images, (p, p, p, p)) if p > 0 else images
        rows = dy.unsqueeze(1) + torch.arange(h, device=device)
        col_base = torch.arange(w, device=device).expand(n, w)
        col_base = torch.where(flips.unsqueeze(1), (w - 1) - col_base, col_base)
        cols = dx.unsqueeze(1) + col_base
        batch_idx = torch.arange(n, device=device).view(n, 1, 1, 1)
        chan_idx = torch.arange(c, device=device).view(1, c, 1, 1)
        return padded[batch_idx, chan_idx, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
