"""Channels-last only where oneDNN is safe (models/memory_format.py; docs/architecture.md)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from hetsearch.models import create_model
from hetsearch.models.memory_format import SubsampledPointwiseConv2d, is_unsafe_in_channels_last, to_channels_last


def narrow_resnet() -> nn.Module:
    # width 4: shortcut 1x1 stride-2 convolutions with 4, 8 and 16 input channels
    return create_model("resnet18", num_classes=3, embedding_dim=16, in_chans=1, image_size=16,
                        backbone_args={"width": 4})


def test_only_strided_pointwise_convs_off_the_channel_block_are_unsafe():
    assert is_unsafe_in_channels_last(nn.Conv2d(4, 8, 1, stride=2))
    assert is_unsafe_in_channels_last(nn.Conv2d(24, 48, 1, stride=2))
    assert not is_unsafe_in_channels_last(nn.Conv2d(16, 32, 1, stride=2))
    assert not is_unsafe_in_channels_last(nn.Conv2d(4, 8, 1, stride=1))
    assert not is_unsafe_in_channels_last(nn.Conv2d(4, 8, 3, stride=2))
    assert not is_unsafe_in_channels_last(nn.Linear(4, 8))


def test_unsafe_convs_are_rewritten_everything_goes_channels_last_and_outputs_agree():
    torch.manual_seed(0)
    model = narrow_resnet().eval()
    x = torch.rand(4, 1, 16, 16)
    expected = model(x)
    params_before = [id(p) for p in model.parameters()]
    state_keys = list(model.state_dict())
    rewritten = to_channels_last(model)
    assert rewritten == ["backbone.layer2.0.downsample.0", "backbone.layer3.0.downsample.0"]
    assert to_channels_last(model) == rewritten  # idempotent
    assert all(isinstance(model.get_submodule(n), SubsampledPointwiseConv2d) for n in rewritten)
    assert type(model.get_submodule("backbone.layer4.0.downsample.0")) is nn.Conv2d  # 16 channels: safe
    assert [id(p) for p in model.parameters()] == params_before
    assert list(model.state_dict()) == state_keys
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
            assert module.weight.is_contiguous(memory_format=torch.channels_last), name
    out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("size", [15, 16])
def test_subsampled_pointwise_conv_equals_the_strided_conv_forward_and_backward(padding, size):
    torch.manual_seed(0)
    reference = nn.Conv2d(4, 8, 1, stride=2, padding=padding)
    rewritten = copy.deepcopy(reference)
    to_channels_last(rewritten)
    x = torch.randn(3, 4, size, size)
    x_ref, x_new = x.clone().requires_grad_(), x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    y_ref, y_new = reference(x_ref), rewritten(x_new)
    assert y_new.shape == y_ref.shape
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y_new.backward(grad)
    torch.testing.assert_close(y_new, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_new.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rewritten.weight.grad, reference.weight.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(rewritten.bias.grad, reference.bias.grad, atol=1e-4, rtol=1e-5)


_PROBE = """
import torch
from hetsearch.models.memory_format import to_channels_last
from tests.test_memory_format import narrow_resnet
torch.manual_seed(0)
model = narrow_resnet().train()
to_channels_last(model)
x = torch.rand(8, 1, 16, 16).contiguous(memory_format=torch.channels_last)
model.classifier_input(model(x, normalize=False)).sum().backward()
"""


def test_avx2_kernels_never_run_a_strided_pointwise_conv_off_the_block_in_channels_last():
    """The oneDNN primitives a training step runs, with the AVX2 kernels forced (as on AVX2-only CPUs).

    Asserting on the primitives, not on a crash: the overrun corrupts memory without always crashing.
    """
    # 2 threads: the kernels CI and a default run choose (with 1 thread oneDNN may pick others)
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ONEDNN_VERBOSE="1", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pointwise = []
    for line in proc.stdout.splitlines():
        if ",exec," not in line or ",convolution," not in line or "backward_weights" not in line:
            continue
        shape = re.search(r"ic(\d+)oc\d+_ih\d+oh\d+kh1sh(\d)", line)
        if shape:
            pointwise.append((int(shape.group(1)), int(shape.group(2)), "src:f32::blocked:acdb" in line))
    # the 16-channel shortcut runs strided; the 4- and 8-channel ones as stride-1 convolutions on
    # subsampled inputs; all channels-last
    assert sorted(pointwise) == [(4, 1, True), (8, 1, True), (16, 2, True)], pointwise
