"""The standalone network of one CMP-NAS architecture, registered as the backbone `cmpnas`
(options: `arch=<architecture id>` plus the layout fields of `CmpNasLayout`).

A searched architecture is retrained, saved, exported and served as an ordinary model with this
backbone; building it needs only `models` (a server never imports `hetsearch.nas`). The search's
supernet (`hetsearch.nas.supernet`) cuts its paths out as `CmpNasNet`s, built from the same block
classes (`hetsearch.models.cmpnas_blocks`), so a path's weights load into this network unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from hetsearch.errors import ConfigError
from hetsearch.models.cmpnas_arch import Architecture, CmpNasLayout, layout_from_options
from hetsearch.models.cmpnas_blocks import ConvBNReLU, make_block
from hetsearch.models.registry import register_backbone


class Tail(nn.Module):
    """The layers after the choice layers: the optional last 1x1 conv, then global pooling."""

    def __init__(self, layout: CmpNasLayout):
        super().__init__()
        self.last = (ConvBNReLU(layout.stage_channels[-1], layout.last_channels, 1, 1) if layout.last_channels
                     else nn.Identity())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


class CmpNasNet(nn.Module):
    """One architecture of `space` as a standalone network: images -> pooled features."""

    def __init__(self, space: CmpNasLayout, arch: Architecture | str, in_chans: int = 1):
        super().__init__()
        self.space, self.arch = space, space.parse(arch)
        self.stem = ConvBNReLU(in_chans, space.stem_channels, space.stem_kernel, space.stem_stride)
        self.layers = nn.ModuleList(
            make_block(block, c_in, c_out, space.mid_channels(i, w), stride)
            for i, ((c_in, c_out, stride), block, w) in enumerate(zip(space.layers(), self.arch.blocks, self.arch.widths)))
        tail = Tail(space)
        self.last, self.pool = tail.last, tail.pool

    @property
    def feature_dim(self) -> int:
        return self.space.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.pool(self.last(x))


@register_backbone("cmpnas")
def cmpnas(*, in_chans: int, image_size: int, arch: Optional[str] = None, **layout_options) -> tuple[nn.Module, int]:
    """The network of one searched CMP-NAS architecture (option: arch, its id; docs/nas.md)."""
    if arch is None:
        raise ConfigError("model.backbone_args.arch: the cmpnas backbone needs an architecture id "
                          "(e.g. from runs/<search>/best.json)")
    net = CmpNasNet(layout_from_options(image_size, layout_options), arch, in_chans)
    return net, net.feature_dim
