"""Channels-last memory format, applied only where oneDNN's CPU kernels are safe.

Why not simply ``model.to(memory_format=torch.channels_last)``: oneDNN (v3.12.0 in torch 2.14.1,
open upstream as uxlfoundation/oneDNN#6035) computes the weight gradient of a *strided 1x1*
convolution on an NHWC (channels-last) input by first copying the input to unit stride in a
workspace ("rtus"). When the input channel count is not a multiple of the kernel's channel block
(8 floats for AVX2, 16 for AVX-512) the copy writes past that workspace: heap corruption
("double free or corruption"), a spinning hang or wrong gradients, depending on what the
overrun hits. NCHW inputs take another path and are correct. docs/architecture.md has the
measurements.

So every such convolution keeps NCHW weights and gets NCHW inputs (a forward pre-hook); all
other layers use channels-last, which is what pays on CPU and GPU alike.
"""

from __future__ import annotations

import torch
from torch import nn

# The widest channel block of oneDNN's x86 1x1 kernels (AVX-512 f32: 16 floats; AVX2: 8 divides it).
ONEDNN_CHANNEL_BLOCK = 16

_GUARD_ATTR = "_hetsearch_nchw_guard"


def is_unsafe_in_channels_last(module: nn.Module) -> bool:
    """True for a strided 1x1 convolution whose per-group input channels miss the oneDNN block."""
    if not isinstance(module, nn.Conv2d):
        return False
    strided = tuple(module.stride) != (1, 1)
    pointwise = tuple(module.kernel_size) == (1, 1)
    channels_per_group = module.in_channels // module.groups
    return pointwise and strided and channels_per_group % ONEDNN_CHANNEL_BLOCK != 0


def _nchw_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(),) + tuple(args[1:])


def to_channels_last(model: nn.Module) -> list[str]:
    """Put ``model`` in channels-last format except the convolutions that oneDNN gets wrong in it.

    Returns the names of the convolutions kept in NCHW. Idempotent; keeps parameter identity
    (an optimiser built before still holds the same tensors).
    """
    model.to(memory_format=torch.channels_last)
    kept: list[str] = []
    for name, module in model.named_modules():
        if not is_unsafe_in_channels_last(module):
            continue
        # PyTorch picks the channels-last kernel when the input *or* the weight looks channels-last;
        # a 1x1 weight is contiguous in both formats, so only explicit NCHW strides settle it.
        module.weight.data = module.weight.data.clone(memory_format=torch.contiguous_format)
        if not getattr(module, _GUARD_ATTR, False):
            module.register_forward_pre_hook(_nchw_input)
            setattr(module, _GUARD_ATTR, True)
        kept.append(name)
    return kept
