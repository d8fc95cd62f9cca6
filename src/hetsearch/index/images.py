"""Query and gallery images as the models see them, plus PNG rendering of stored thumbnails.

Decoding reuses `hetsearch.data.transforms.fit_pil_image`, the one definition of how a user's
image is brought to a model's channels and size (the same call the data layer makes for training
images), with the resize mode recorded in the model's training config.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from hetsearch.data.transforms import fit_pil_image
from hetsearch.errors import DataError

# Pixel modes whose conversion to L / RGB is faithful. High bit-depth and exotic modes (I;16, I, F,
# LAB, HSV) would be clipped or mis-scaled by a plain conversion, so they are refused instead.
ACCEPTED_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
DEFAULT_MAX_PIXELS = 40_000_000  # ~ a 6300 x 6300 photo; larger decodes are refused


class ImageRejected(DataError):
    """An uploaded or given image cannot be used; ``status_code`` is the HTTP status to answer."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.status_code = status_code


def resize_mode_of(meta) -> str:
    """How the model's training data brought user images to size ("center_crop" or "stretch")."""
    data = (getattr(meta, "config", None) or {}).get("data", {}) or {}
    return data.get("resize", "center_crop") or "center_crop"


def decode_image_bytes(data: bytes, channels: int, image_size: int, resize: str = "center_crop", *,
                       name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 (C, H, W) from encoded image bytes; raises ImageRejected with a clear message."""
    if not data:
        raise ImageRejected(f"{name}: empty file (0 bytes); expected an encoded image (PNG, JPEG, ...)", 400)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageRejected(
                        f"{name}: {width}x{height} pixels is larger than the limit of {max_pixels} pixels", 413)
                if img.mode not in ACCEPTED_MODES:
                    raise ImageRejected(
                        f"{name}: unsupported pixel mode {img.mode!r}; expected an 8-bit image "
                        f"(one of {', '.join(sorted(ACCEPTED_MODES))})", 415)
                img.load()  # a truncated file fails here
                return fit_pil_image(img, channels, image_size, resize)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(f"{name}: not an image file Pillow can read (PNG, JPEG, GIF, BMP, WebP, TIFF, ...)",
                            415) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"{name}: image too large to decode safely ({exc})", 413) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageRejected(f"{name}: corrupt or truncated image ({type(exc).__name__}: {exc})", 400) from None


def read_image_file(path, channels: int, image_size: int, resize: str = "center_crop") -> np.ndarray:
    """uint8 (C, H, W) for an image file given on the command line."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    return decode_image_bytes(data, channels, image_size, resize, name=str(path))


def encode_png(image_chw: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (C, H, W) image, C = 1 or 3."""
    array = np.asarray(image_chw, dtype=np.uint8)
    hwc = array.transpose(1, 2, 0)
    img = Image.fromarray(np.ascontiguousarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc))  # L or RGB
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
