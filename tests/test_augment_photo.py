"""Photo augmentation (issue 21.3): random-resized crop and colour jitter in `BatchAugment`, configured
by `train.augment`; off by default, and the defaults reproduce the earlier augmentation bit for bit."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
import torch

from hetsearch.config import AugmentConfig, TrainRunConfig
from hetsearch.data.augment import BatchAugment
from hetsearch.errors import ConfigError
from hetsearch.train.trainer import Trainer
from hetsearch.utils.typed_config import from_dict

PHOTO = dict(resized_crop_scale=(0.3, 1.0), brightness=0.4, contrast=0.4, saturation=0.4)


def _images(n=16, c=3, size=12, seed=1) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# Output digests of three calls in a row, and the generator's next draw, computed with BatchAugment as
# it was before the photo options existed (commit c0c830d): the defaults must not change one byte.
GOLDEN = [
    (dict(crop_padding=2), "d664abdd57bd7213", 0.035817086696624756),
    (dict(crop_padding=4, hflip=True, erase_prob=0.5), "81f649cf9add9313", 0.28412115573883057),
    (dict(crop_padding=0, hflip=False), "88d4a1df05f69c9c", 0.5349225401878357),
]


@pytest.mark.parametrize("kwargs,digest,next_draw", GOLDEN)
def test_defaults_reproduce_the_augmentation_from_before_the_photo_options(kwargs, digest, next_draw):
    x = _images()
    generator = torch.Generator().manual_seed(7)
    out = torch.cat([BatchAugment(**kwargs)(x, generator) for _ in range(3)])
    assert hashlib.sha256(out.numpy().tobytes()).hexdigest()[:16] == digest
    assert torch.rand(1, generator=generator).item() == pytest.approx(next_draw, abs=0)


def test_config_defaults_keep_the_photo_options_off_and_the_trainer_passes_them():
    cfg = AugmentConfig()
    assert cfg.photo_options() == {"resized_crop_scale": None, "resized_crop_ratio": (0.75, 4 / 3),
                                   "brightness": 0.0, "contrast": 0.0, "saturation": 0.0}
    run = TrainRunConfig()
    aug = Trainer._augment(SimpleNamespace(cfg=run))
    assert aug.resized_crop_scale is None and not any(aug.jitter.values())
    run.train.augment = from_dict(AugmentConfig, {"resized_crop_scale": [0.35, 1.0], "brightness": 0.4,
                                                  "contrast": 0.3, "saturation": 0.2, "crop_padding": 0})
    aug = Trainer._augment(SimpleNamespace(cfg=run))
    assert aug.resized_crop_scale == (0.35, 1.0) and aug.crop_padding == 0
    assert aug.jitter == {"brightness": 0.4, "contrast": 0.3, "saturation": 0.2}


@pytest.mark.parametrize("options", [dict(resized_crop_scale=(0.3, 1.0)), dict(brightness=0.5), dict(contrast=0.5),
                                     dict(saturation=0.5), PHOTO])
def test_each_photo_option_is_seeded_keeps_shape_and_dtype_and_changes_images(options):
    x = _images()
    aug = BatchAugment(crop_padding=0, hflip=False, **options)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
    out = aug(x.float(), torch.Generator().manual_seed(3))  # float on the 0..255 scale stays float
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 255
    assert (out - a.float()).abs().max() <= 3.0  # the uint8 path only adds rounding (after each op)


def test_full_box_resized_crop_is_the_identity_and_a_small_box_magnifies():
    x = _images()
    full = BatchAugment(crop_padding=0, hflip=False, resized_crop_scale=(1.0, 1.0), resized_crop_ratio=(1.0, 1.0))
    assert torch.equal(full(x, torch.Generator().manual_seed(0)), x)
    # a quarter-area square box is 8x8 of a 16x16 image, resized to 16x16: magnified 2x. On a horizontal
    # ramp (10 per pixel) bilinear sampling is exact, so inner neighbouring columns differ by 5
    ramp = (10 * torch.arange(16, dtype=torch.float32) + 5).expand(32, 3, 16, 16).contiguous()
    small = BatchAugment(crop_padding=0, hflip=False, resized_crop_scale=(0.25, 0.25), resized_crop_ratio=(1.0, 1.0))
    out = small(ramp, torch.Generator().manual_seed(0))
    steps = out[..., 1:-1].diff(dim=-1)
    assert torch.allclose(steps, torch.full_like(steps, 5.0), atol=1e-3)
    starts = out[:, 0, 0, 1]  # where each box begins differs per sample (uniform position)
    assert len(starts.unique()) == len(starts)
    assert torch.allclose(out[:, :, 0], out[:, :, -1], atol=1e-3)  # the ramp has no vertical change


def test_colour_jitter_semantics_on_flat_and_grey_images():
    grey = torch.full((32, 3, 4, 4), 100, dtype=torch.uint8)
    # brightness scales by a factor in [0.5, 1.5]; each image stays flat
    out = BatchAugment(crop_padding=0, hflip=False, brightness=0.5)(grey, torch.Generator().manual_seed(0))
    assert out.min() >= 50 and out.max() <= 150
    assert all(len(image.unique()) == 1 for image in out) and len(out[:, 0, 0, 0].unique()) > 10
    # contrast around the image's own mean and saturation around each pixel's grey leave flat grey alone
    for option in ("contrast", "saturation"):
        same = BatchAugment(crop_padding=0, hflip=False, **{option: 0.9})(grey, torch.Generator().manual_seed(0))
        assert torch.equal(same, grey)
    # saturation 1.0 can remove the colour entirely (factor 0): a pure red turns grey in some samples
    red = torch.zeros(64, 3, 2, 2, dtype=torch.uint8)
    red[:, 0] = 200
    out = BatchAugment(crop_padding=0, hflip=False, saturation=1.0)(red, torch.Generator().manual_seed(0)).float()
    spread = out.amax(1) - out.amin(1)
    assert spread.min() < 40 and spread.max() > 150
    # greyscale batches: saturation does nothing, brightness still applies
    one = torch.full((8, 1, 4, 4), 100, dtype=torch.uint8)
    assert torch.equal(BatchAugment(crop_padding=0, hflip=False, saturation=0.9)(one, torch.Generator()), one)


def test_photo_options_draw_nothing_when_off_and_compose_with_crop_flip_erase():
    x = _images(n=8)
    plain = BatchAugment(crop_padding=2, erase_prob=0.5)
    explicit = BatchAugment(crop_padding=2, erase_prob=0.5, resized_crop_scale=None, brightness=0, contrast=0,
                            saturation=0)
    assert torch.equal(plain(x, torch.Generator().manual_seed(5)), explicit(x, torch.Generator().manual_seed(5)))
    everything = BatchAugment(crop_padding=2, hflip=True, erase_prob=0.5, **PHOTO)
    out = everything(x, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and torch.equal(out, everything(x, torch.Generator().manual_seed(5)))
    assert len(everything(x[:0], torch.Generator())) == 0
    assert "resized_crop_scale=(0.3, 1.0)" in repr(everything) and "brightness=0.4" in repr(everything)


@pytest.mark.parametrize("key,value,message", [
    ("resized_crop_scale", [0.6, 0.2], "train.augment.resized_crop_scale: got [0.6, 0.2], expected [min, max] "
                                       "with 0 < min <= max <= 1"),
    ("resized_crop_scale", [0.0, 1.0], "resized_crop_scale"),
    ("resized_crop_scale", [0.5, 1.5], "resized_crop_scale"),
    ("resized_crop_scale", [0.5], "resized_crop_scale"),
    ("resized_crop_ratio", [2.0, 0.5], "train.augment.resized_crop_ratio: got [2.0, 0.5], expected [min, max] "
                                       "with 0 < min <= max"),
    ("brightness", -0.1, "train.augment.brightness: got -0.1, expected a value >= 0 (0: off)"),
    ("contrast", -1, "train.augment.contrast"),
    ("saturation", -2.0, "train.augment.saturation"),
    ("erase_prob", 1.5, "train.augment.erase_prob: got 1.5, expected a probability in [0, 1]"),
    ("erase_area", [0.3, 0.1], "train.augment.erase_area"),
    ("crop_padding", -1, "train.augment.crop_padding"),
])
def test_invalid_values_are_one_line_config_errors(key, value, message):
    with pytest.raises(ConfigError) as info:
        from_dict(AugmentConfig, {key: value}, "train.augment")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_batch_augment_rejects_invalid_values_too():
    for kwargs, name in ((dict(resized_crop_scale=(0.5, 0.1)), "resized_crop_scale"),
                         (dict(resized_crop_ratio=(0.0, 1.0)), "resized_crop_ratio"),
                         (dict(brightness=-1.0), "brightness")):
        with pytest.raises(ValueError, match=name):
            BatchAugment(crop_padding=0, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_draws_on_cuda_as_on_cpu():
    x = _images(n=32, size=32)
    aug = BatchAugment(crop_padding=4, hflip=True, erase_prob=0.5, **PHOTO)
    cpu = aug(x, torch.Generator().manual_seed(9))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(9)).cpu()
    assert (cpu.int() - gpu.int()).abs().max() <= 1  # bilinear sampling may round differently
