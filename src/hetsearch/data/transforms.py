"""Bringing images to the configured channels and size, once, at load time.

User images (Pillow) use ``DataConfig.resize``:
  * "center_crop" (default): resize the shorter side to ``image_size`` then cut the centre
    square. Objects keep their proportions, which matters more for retrieval than the border
    lost from non-square photos.
  * "stretch": plain resize to ``image_size`` x ``image_size``: nothing is lost, shapes distort.
Tensors already in memory (Fashion-MNIST) are square, so they are simply resized.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

_MODES = {1: "L", 3: "RGB"}


_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
DEFAULT_BACKGROUND = (255, 255, 255)


def has_alpha(img: Image.Image) -> bool:
    """True when the image carries transparency (an alpha band, or a palette/tRNS transparent colour)."""
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def composite_alpha(img: Image.Image, background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> Image.Image:
    """An RGB image: ``img`` composited over a solid ``background`` (alpha-weighted)."""
    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
    return Image.alpha_composite(base, rgba).convert("RGB")


def fit_pil_image(img: Image.Image, channels: int, image_size: int, resize: str = "center_crop",
                  background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> np.ndarray:
    """A decoded PIL image as uint8 (C, H, W) with C = ``channels`` and H = W = ``image_size``.

    Transparent pixels are composited on ``background`` (``data.background``), never dropped:
    a transparent pixel's stored colour is arbitrary (often black).
    """
    img = ImageOps.exif_transpose(img)  # photos from phones store rotation in EXIF
    if has_alpha(img):
        img = composite_alpha(img, background)
    if img.mode != _MODES[channels]:
        img = img.convert(_MODES[channels])
    width, height = img.size
    if resize == "stretch":
        if (width, height) != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    else:
        scale = image_size / min(width, height)
        new_w = max(image_size, round(width * scale))
        new_h = max(image_size, round(height * scale))
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
        left = (new_w - image_size) // 2
        top = (new_h - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def fit_tensor_images(images: torch.Tensor, channels: int, image_size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, channels, image_size, image_size).

    Greyscale -> RGB repeats the channel; RGB -> greyscale uses the ITU-R 601 luma weights
    (as Pillow's "L"). Resizing is bilinear with antialiasing, in chunks to bound memory.
    """
    if images.shape[1] == 1 and channels == 3:
        images = images.repeat(1, 3, 1, 1)
    elif images.shape[1] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        images = (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    if tuple(images.shape[-2:]) == (image_size, image_size):
        return images.contiguous()
    out = []
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        out.append(part.round_().clamp_(0, 255).to(torch.uint8))
    if not out:
        return images.new_zeros((0, images.shape[1], image_size, image_size))
    return torch.cat(out)
