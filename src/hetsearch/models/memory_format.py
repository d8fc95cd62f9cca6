"""Channels-last memory format, applied so that oneDNN's faulty CPU kernel is never reached.

Why not simply ``model.to(memory_format=torch.channels_last)``: oneDNN (v3.12.0 in torch 2.14.1
and 2.13.0; open upstream as uxlfoundation/oneDNN#6035) computes the weight gradient of a
*strided 1x1* convolution on an NHWC (channels-last) input by first copying the input to unit
stride in a workspace ("rtus"). When the input channel count is not a multiple of the kernel's
channel block (8 floats for AVX2, 16 for AVX-512) the copy writes past that workspace: heap
corruption ("double free or corruption"), a spinning hang or wrong gradients, depending on what
the overrun hits. Stride-1 1x1 convolutions and NCHW inputs take other paths and are correct.
docs/architecture.md has the measurements.

So every such convolution does the subsampling itself and then runs as a stride-1 1x1
convolution, which is the same arithmetic (a 1x1 kernel reads exactly the strided pixels) and
stays channels-last, like every other layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The widest channel block of oneDNN's x86 1x1 kernels (AVX-512 f32: 16 floats; AVX2: 8 divides it).
ONEDNN_CHANNEL_BLOCK = 16


def is_unsafe_in_channels_last(module: nn.Module) -> bool:
    """True for a strided 1x1 convolution whose per-group input channels miss the oneDNN block."""
    if not isinstance(module, nn.Conv2d) or isinstance(module, SubsampledPointwiseConv2d):
        return False
    strided = tuple(module.stride) != (1, 1)
    pointwise = tuple(module.kernel_size) == (1, 1)
    channels_per_group = module.in_channels // module.groups
    return pointwise and strided and channels_per_group % ONEDNN_CHANNEL_BLOCK != 0


class SubsampledPointwiseConv2d(nn.Conv2d):
    """A strided 1x1 convolution computed as (zero padding,) subsampling, then a stride-1 1x1
    convolution: equal outputs and gradients, same parameters and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = self.padding
        if pad_h or pad_w:
            x = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
        step_h, step_w = self.stride
        return F.conv2d(x[:, :, ::step_h, ::step_w], self.weight, self.bias, 1, 0, self.dilation, self.groups)


def to_channels_last(model: nn.Module) -> list[str]:
    """Put ``model`` in channels-last format, with the convolutions oneDNN gets wrong in it
    rewritten as subsampling + stride-1 convolution. Returns their names.

    Idempotent; keeps parameter identity (an optimiser built before holds the same tensors).
    """
    rewritten: list[str] = []
    for name, module in model.named_modules():
        if is_unsafe_in_channels_last(module) and module.padding_mode == "zeros":
            module.__class__ = SubsampledPointwiseConv2d  # same attributes, another forward
        if isinstance(module, SubsampledPointwiseConv2d):
            rewritten.append(name)
    model.to(memory_format=torch.channels_last)
    return rewritten
