"""Model cost (FLOPs, params, latency) and batched embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hetsearch.errors import DataError
from hetsearch.eval import embed, measure_latency
from hetsearch.models.cost import count_flops, count_params


def conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 4),
    )


class TinyEmbedder(nn.Module):
    """Conv + BN (so eval/train mode matters) + linear, L2-normalised output."""

    def __init__(self, in_chans: int = 1, dim: int = 6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()
        )
        self.head = nn.LazyLinear(dim)

    def forward(self, x):
        return nn.functional.normalize(self.head(self.features(x)), dim=1)


def test_flops_of_conv_are_two_times_macs():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (1, 3, 8, 8)) == 2 * 8 * 8 * 8 * 3 * 3 * 3


def test_flops_of_linear_and_of_a_small_network():
    assert count_flops(nn.Linear(16, 4), (1, 16)) == 2 * 16 * 4
    assert count_flops(nn.Linear(16, 4), (5, 16)) == 5 * 2 * 16 * 4
    # Element-wise ops (bias, ReLU, pooling) are not counted: conv + linear only.
    assert count_flops(conv_net(), (1, 3, 8, 8)) == 2 * 8 * 8 * 8 * 27 + 2 * 8 * 4


def test_count_flops_restores_training_mode():
    model = conv_net().train()
    count_flops(model, (1, 3, 8, 8))
    assert model.training


def test_count_params():
    assert count_params(nn.Conv2d(3, 8, 3)) == 8 * 3 * 3 * 3 + 8
    assert count_params(nn.Linear(16, 4)) == 16 * 4 + 4
    model = conv_net()
    model[0].weight.requires_grad_(False)
    assert count_params(model) == 224 + 36
    assert count_params(model, trainable_only=True) == 8 + 36


def test_count_params_counts_shared_parameters_once():
    layer = nn.Linear(4, 4)
    assert count_params(nn.Sequential(layer, layer)) == 20


def test_measure_latency_returns_positive_medians_per_batch_size():
    model = conv_net().train()
    latency = measure_latency(model, (1, 3, 8, 8), batch_sizes=(1, 4), repeats=3, warmup=1)
    assert set(latency) == {1, 4}
    assert all(isinstance(v, float) and v > 0 for v in latency.values())
    assert model.training  # mode restored
    assert measure_latency(model, (3, 8, 8), batch_sizes=(2,), repeats=1, warmup=0)[2] > 0


def _images(n: int = 37, chans: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, chans, 8, 8), dtype=torch.uint8, generator=generator)


# Kernel-to-kernel tolerance for unit-norm float32 embeddings of TinyEmbedder. Its longest
# reduction is the 256-input linear layer; reordering a float32 sum of n terms moves it by at most
# about n * 2**-24 of the magnitudes summed (~1.5e-5 for n = 256). Observed: ~1e-6 between
# oneDNN's AVX-512 and AVX2 kernels and with oneDNN disabled, so 1e-6 was too tight and 1e-5
# still catches a real fault (a wrong kernel is off by far more than 1e-3).
KERNEL_ATOL = 256 * 2.0**-24


def test_embed_is_normalised_batched_and_deterministic():
    torch.manual_seed(0)
    model = TinyEmbedder(in_chans=3)
    model(torch.zeros(2, 3, 8, 8))  # materialise the lazy layer
    model.train()
    images = _images(chans=3)
    out = embed(model, images, batch_size=8)
    assert out.shape == (37, 6) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out, embed(model, images, batch_size=8))
    # Another batch size or memory format runs other oneDNN kernels (AVX-512, AVX2 or no oneDNN at
    # all), which sum in another order: float32 results then agree to a rounding bound, not bits.
    np.testing.assert_allclose(out, embed(model, images, batch_size=512), atol=KERNEL_ATOL)
    np.testing.assert_allclose(out, embed(model, images.numpy(), channels_last=False), atol=KERNEL_ATOL)
    assert model.training  # eval mode was used for embedding, then restored


def test_embed_feeds_floats_in_unit_range():
    class Identity(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    images = _images(n=5)
    out = embed(Identity(), images, normalize=False)
    np.testing.assert_allclose(out, images.flatten(1).numpy() / 255.0, rtol=1e-6)


def test_embed_rejects_non_uint8_images():
    with pytest.raises(DataError, match="uint8"):
        embed(nn.Flatten(), torch.rand(2, 1, 8, 8))
    with pytest.raises(DataError, match="uint8"):
        embed(nn.Flatten(), torch.zeros(2, 8, 8, dtype=torch.uint8))
