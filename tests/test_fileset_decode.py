"""The training decoder (`hetsearch.data.fileset.decode_image`): JPEG draft scaling keeps the pixels."""

import numpy as np
from PIL import Image

from hetsearch.data.fileset import DecodeSpec, decode_image
from hetsearch.data.transforms import fit_pil_image


def _photo(path, side=256, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    rgb = np.stack([np.sin(6 * (xx + c * yy) + c) for c in range(3)], -1)
    pixels = (127 + 100 * rgb + rng.normal(0, 6, rgb.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=92)


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_same_content(tmp_path):
    path = tmp_path / "photo.jpg"
    _photo(path)
    spec = DecodeSpec(channels=3, image_size=64)
    drafted = decode_image(path, spec)
    with Image.open(path) as img:
        img.load()
        full = fit_pil_image(img, 3, 64)  # full-size decode, then resize
    assert drafted.shape == full.shape == (3, 64, 64)
    assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 3.0  # same picture, a DCT-scaled decode


def test_small_and_non_jpeg_images_are_unchanged_by_drafting(tmp_path):
    spec = DecodeSpec(channels=3, image_size=64)
    for name in ("small.jpg", "photo.png"):
        path = tmp_path / name
        _photo(path, side=48 if name == "small.jpg" else 256)
        with Image.open(path) as img:
            img.load()
            expected = fit_pil_image(img, 3, 64)
        np.testing.assert_array_equal(decode_image(path, spec), expected)
