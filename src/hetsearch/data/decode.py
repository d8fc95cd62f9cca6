"""Query and gallery images as the models see them, plus PNG rendering of stored thumbnails.

Decoding takes the model's `DecodeSpec` (``Preprocessing.decode_spec()``: channels, size, resize
mode, background) and reuses `hetsearch.data.transforms.fit_pil_image`, the one definition of how
a user's image is brought to a model's input (the same call the data layer makes for training
images and gallery files).

Decoding is bounded before any pixel is touched: from the header alone an image is refused (413)
when a side exceeds ``MAX_SIDE`` pixels, its aspect ratio exceeds ``MAX_ASPECT``, or it has more
than ``max_pixels`` pixels; high bit-depth or exotic modes are refused (415). What is decoded is
then *cropped before it is resized* (the centre square for ``center_crop``), and JPEGs are
decoded at a reduced scale (``draft``), so no intermediate image is larger than the decoded one.
A `PixelBudget` shared by a server bounds how many pixels are being decoded at once, so the
server's peak memory is bounded whatever the concurrency; ``MemoryError`` becomes a 413.
"""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hetsearch.data.fileset import DecodeSpec
from hetsearch.data.transforms import fit_pil_image
from hetsearch.errors import DataError

# Pixel modes whose conversion to L / RGB is faithful. High bit-depth and exotic modes (I;16, I, F,
# LAB, HSV) would be clipped or mis-scaled by a plain conversion, so they are refused instead.
ACCEPTED_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
DEFAULT_MAX_PIXELS = 40_000_000  # ~ a 6300 x 6300 photo; larger decodes are refused
MAX_SIDE = 16_384                # longest accepted side, in pixels
MAX_ASPECT = 64                  # longest side / shortest side
BYTES_PER_PIXEL = 4              # the widest decoded mode accepted (RGBA, CMYK)
# peak bytes of one decode relative to its decoded size: the decoded image, its EXIF-rotated copy and
# a mode conversion of the crop can coexist
DECODE_COPIES = 3


class ImageRejected(DataError):
    """An uploaded or given image cannot be used; ``status_code`` is the HTTP status to answer."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.status_code = status_code


class PixelBudget:
    """At most ``capacity`` pixels being decoded at once across threads (a weighted semaphore).

    A request larger than the whole budget waits until it runs alone. The peak memory of all
    concurrent decodes is then about ``capacity * BYTES_PER_PIXEL * DECODE_COPIES`` bytes."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("PixelBudget capacity must be positive")
        self.capacity = int(capacity)
        self._used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, pixels: int):
        pixels = max(1, min(int(pixels), self.capacity))
        with self._cond:
            self._cond.wait_for(lambda: self._used + pixels <= self.capacity)
            self._used += pixels
        try:
            yield
        finally:
            with self._cond:
                self._used -= pixels
                self._cond.notify_all()

    @property
    def in_use(self) -> int:
        return self._used


def _rawmode(img: Image.Image) -> str:
    """The decoder's raw mode (e.g. "RGB;16B" for a 16-bit PNG that Pillow would narrow to "RGB")."""
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        if isinstance(args, tuple):
            args = args[0] if args else None
        if isinstance(args, str):
            return args
    return ""


def check_header(img: Image.Image, name: str, max_pixels: int) -> None:
    """Refuse from the header alone: sizes (413) and pixel formats that cannot be converted (415)."""
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageRejected(f"{name}: {width}x{height} pixels; expected an image with at least one pixel", 400)
    if max(width, height) > MAX_SIDE:
        raise ImageRejected(f"{name}: {width}x{height} pixels; each side may be at most {MAX_SIDE} pixels", 413)
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageRejected(f"{name}: {width}x{height} pixels has an aspect ratio over {MAX_ASPECT}:1; "
                            "crop it to the object first", 413)
    if width * height > max_pixels:
        raise ImageRejected(f"{name}: {width}x{height} pixels is larger than the limit of {max_pixels} pixels", 413)
    if img.mode not in ACCEPTED_MODES:
        raise ImageRejected(f"{name}: unsupported pixel mode {img.mode!r}; expected an 8-bit image "
                            f"(one of {', '.join(sorted(ACCEPTED_MODES))})", 415)
    raw = _rawmode(img)
    if any(depth in raw for depth in (";16", ";32", ";F")):
        raise ImageRejected(f"{name}: {raw.split(';')[1] if ';' in raw else raw} bits per channel "
                            f"(raw mode {raw!r}); expected an 8-bit image: convert it to 8 bits first", 415)


REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})  # Image.reduce supports these


def _bounded_fit(img: Image.Image, spec: DecodeSpec) -> np.ndarray:
    """`fit_pil_image` on the part of the image it keeps, with every intermediate at most as large as
    the decoded image: for ``center_crop`` the centre square is cut *before* resizing (never an
    upscaled full image), and a large image is first reduced by an integer factor (box filter) to
    at most 4x the model's input, so the final resize and mode conversion work on a small image."""
    if img.getexif().get(0x0112, 1) not in (None, 1):  # EXIF orientation: rotate first (a copy)
        img = ImageOps.exif_transpose(img)
    width, height = img.size
    if spec.resize != "stretch":
        side = min(width, height)
        if (width, height) != (side, side):
            left, top = (width - side) // 2, (height - side) // 2
            img = img.crop((left, top, left + side, top + side))
    factor = min(img.size) // (4 * spec.image_size)
    if factor >= 2 and img.mode in REDUCIBLE_MODES:
        img = img.reduce(factor)
    return fit_pil_image(img, spec.channels, spec.image_size, spec.resize, background=spec.background)


def decode_image_bytes(data: bytes, spec: DecodeSpec, *, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS,
                       budget: PixelBudget | None = None, info: dict | None = None) -> np.ndarray:
    """uint8 (C, H, W) from encoded image bytes, decoded as ``spec`` says (the model's
    ``preprocessing.decode_spec()``); raises ImageRejected with a clear message.
    ``info``, when given, receives ``pixels``: the decoded size (after JPEG draft scaling)."""
    if not data:
        raise ImageRejected(f"{name}: empty file (0 bytes); expected an encoded image (PNG, JPEG, ...)", 400)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                check_header(img, name, max_pixels)
                if img.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that still covers the input
                    img.draft(img.mode, (spec.image_size, spec.image_size))
                width, height = img.size
                if info is not None:
                    info["pixels"] = width * height
                with budget.reserve(width * height) if budget is not None else contextlib.nullcontext():
                    img.load()  # a truncated file fails here
                    return _bounded_fit(img, spec)
    except ImageRejected:
        raise
    except MemoryError:
        raise ImageRejected(f"{name}: not enough memory to decode this image; send a smaller one", 413) from None
    except UnidentifiedImageError:
        raise ImageRejected(f"{name}: not an image file Pillow can read (PNG, JPEG, GIF, BMP, WebP, TIFF, ...)",
                            415) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"{name}: image too large to decode safely ({exc})", 413) from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError, struct.error) as exc:
        raise ImageRejected(f"{name}: corrupt or truncated image ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})", 400) from None


def read_image_file(path, spec: DecodeSpec) -> np.ndarray:
    """uint8 (C, H, W) for an image file given on the command line, decoded as ``spec`` says."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    return decode_image_bytes(data, spec, name=str(path))


def encode_png(image_chw: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (C, H, W) image, C = 1 or 3."""
    array = np.asarray(image_chw, dtype=np.uint8)
    hwc = array.transpose(1, 2, 0)
    img = Image.fromarray(np.ascontiguousarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc))  # L or RGB
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
