"""The building blocks of the CMP-NAS network family: one definition of each, shared by the
search's supernet (`hetsearch.nas.supernet`) and by every standalone network of the family
(`hetsearch.models.cmpnas`, which a server builds without importing the search).

Blocks follow Single Path One-Shot (SPOS, Guo et al. 2020) over ShuffleNetV2:

- `ShuffleBlock(k)`: ShuffleNetV2 unit with a k x k depthwise convolution (k = 3, 5, 7).
  Stride 1 with equal in/out channels: channel split, the main branch transforms one half
  (1x1 -> dw kxk -> 1x1), concatenation, channel shuffle (the SPOS even/odd split).
  Otherwise ("projection" unit: the first layer of a stage, which changes stride or width):
  the main branch and a projection branch (dw kxk -> 1x1) both see the whole input.
- `XceptionBlock`: three (dw 3x3 -> 1x1) pairs in the main branch, same split/projection rules.

Every block is built with its *largest* hidden ("mid") width and runs with any smaller one
(`forward(x, mid)`) by using the leading slices of its weights, so a supernet shares weights
across width choices. A standalone network builds each block with exactly the chosen width
and runs it at full width through the same code. Batch norms slice themselves by the channel
count of their input (`SlicedBatchNorm2d`); the sliced running statistics are updated in place.
Every layer's cost is given analytically by `Block.cost` (used by hetsearch.nas.cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_TYPES = ("shuffle3", "shuffle5", "shuffle7", "xception")
BLOCK_CODES = {"shuffle3": "3", "shuffle5": "5", "shuffle7": "7", "xception": "x"}


class SlicedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises the leading `C` of its features when given `C` channels.

    Identical to `nn.BatchNorm2d` at full width (including momentum=None cumulative averaging),
    so BN recalibration treats both alike.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean[:c] if track else None,
                            self.running_var[:c] if track else None,
                            self.weight[:c] if self.affine else None, self.bias[:c] if self.affine else None,
                            use_batch_stats, factor, self.eps)


def _conv(conv: nn.Conv2d, x: torch.Tensor, out_channels: int | None = None, kernel: int | None = None) -> torch.Tensor:
    """`conv` applied to `x` with the leading slices of its weight: input channels follow `x`,
    output channels are `out_channels` (default: all). Depthwise convs follow `x` throughout.
    `kernel` (smaller than the conv's own) uses the centre `kernel` x `kernel` of its weights."""
    c_in = x.shape[1]
    if conv.groups > 1:  # depthwise
        weight = conv.weight[:c_in]
        groups = c_in
    else:
        weight = conv.weight[:out_channels, :c_in] if out_channels is not None else conv.weight[:, :c_in]
        groups = 1
    padding = conv.padding
    full = conv.kernel_size[0]
    if kernel is not None and kernel != full:
        if kernel > full or (full - kernel) % 2:
            raise ValueError(f"cannot run a {full}x{full} convolution as {kernel}x{kernel}")
        offset = (full - kernel) // 2
        weight = weight[:, :, offset:offset + kernel, offset:offset + kernel]
        padding = (kernel // 2, kernel // 2)
    return F.conv2d(x, weight, None, conv.stride, padding, conv.dilation, groups)


def channel_shuffle_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPOS channel shuffle: even channels pass through, odd channels enter the main branch."""
    n, c, h, w = x.shape
    x = x.reshape(n * c // 2, 2, h * w).permute(1, 0, 2).reshape(2, n, c // 2, h, w)
    return x[0], x[1]


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class LayerCost:
    flops: int   # FLOPs = 2 x MACs of the convolutions (what torch.utils.flop_counter counts)
    params: int  # parameters: conv weights and batch-norm affine parameters


def _pw(c_in: int, c_out: int, hw: int) -> int:
    return 2 * c_in * c_out * hw


def _dw(c: int, k: int, hw: int) -> int:
    return 2 * c * k * k * hw


class Block(nn.Module):
    """Base class: `in_channels -> out_channels` at `stride`, hidden width up to `max_mid`."""

    projection: bool  # True: projection unit (no channel split)

    def __init__(self, in_channels: int, out_channels: int, max_mid: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"block stride must be 1 or 2, got {stride}")
        self.in_channels, self.out_channels, self.max_mid, self.stride = in_channels, out_channels, max_mid, stride
        self.projection = stride != 1 or in_channels != out_channels
        if not self.projection and out_channels % 2:
            raise ValueError(f"a stride-1 unit needs an even channel count, got {out_channels}")
        if self.projection and out_channels <= in_channels:
            raise ValueError(f"a projection unit must widen ({in_channels} -> {out_channels} channels)")

    @property
    def main_in(self) -> int:
        return self.in_channels if self.projection else self.in_channels // 2

    @property
    def main_out(self) -> int:
        return self.out_channels - self.in_channels if self.projection else self.out_channels // 2

    def forward(self, x: torch.Tensor, mid: int | None = None, kernel: int | None = None) -> torch.Tensor:
        """`mid`: hidden width (default: the largest); `kernel`: depthwise kernel size for blocks
        with a kernel choice (default: their own; smaller ones use the centre of the weights)."""
        mid = self.max_mid if mid is None else mid
        if not 0 < mid <= self.max_mid:
            raise ValueError(f"hidden width {mid} outside 1..{self.max_mid}")
        if self.projection:
            return torch.cat((self._proj(x, kernel), self._main(x, mid, kernel)), 1)
        passthrough, x = channel_shuffle_split(x)
        return torch.cat((passthrough, self._main(x, mid, kernel)), 1)

    def _main(self, x: torch.Tensor, mid: int, kernel: int | None) -> torch.Tensor:
        raise NotImplementedError

    def _proj(self, x: torch.Tensor, kernel: int | None) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def cost(cls, in_channels: int, out_channels: int, mid: int, stride: int, size: int, **kw) -> tuple[LayerCost, int]:
        """(cost, output size) of this block type at input `size` x `size`, without building it."""
        raise NotImplementedError


def _bn_params(c: int) -> int:
    return 2 * c


class ShuffleBlock(Block):
    """ShuffleNetV2 unit with a `kernel` x `kernel` depthwise convolution."""

    def __init__(self, in_channels: int, out_channels: int, max_mid: int, stride: int, kernel: int):
        super().__init__(in_channels, out_channels, max_mid, stride)
        self.kernel = kernel
        pad = kernel // 2
        self.pw1 = nn.Conv2d(self.main_in, max_mid, 1, bias=False)
        self.bn1 = SlicedBatchNorm2d(max_mid)
        self.dw = nn.Conv2d(max_mid, max_mid, kernel, stride, pad, groups=max_mid, bias=False)
        self.bn2 = SlicedBatchNorm2d(max_mid)
        self.pw2 = nn.Conv2d(max_mid, self.main_out, 1, bias=False)
        self.bn3 = SlicedBatchNorm2d(self.main_out)
        if self.projection:
            self.proj_dw = nn.Conv2d(in_channels, in_channels, kernel, stride, pad, groups=in_channels, bias=False)
            self.proj_bn1 = SlicedBatchNorm2d(in_channels)
            self.proj_pw = nn.Conv2d(in_channels, in_channels, 1, bias=False)
            self.proj_bn2 = SlicedBatchNorm2d(in_channels)

    def _main(self, x: torch.Tensor, mid: int, kernel: int | None) -> torch.Tensor:
        x = F.relu(self.bn1(_conv(self.pw1, x, mid)))
        x = self.bn2(_conv(self.dw, x, kernel=kernel))
        return F.relu(self.bn3(_conv(self.pw2, x)))

    def _proj(self, x: torch.Tensor, kernel: int | None) -> torch.Tensor:
        x = self.proj_bn1(_conv(self.proj_dw, x, kernel=kernel))
        return F.relu(self.proj_bn2(_conv(self.proj_pw, x)))

    @classmethod
    def cost(cls, in_channels, out_channels, mid, stride, size, kernel=3):
        projection = stride != 1 or in_channels != out_channels
        main_in = in_channels if projection else in_channels // 2
        main_out = out_channels - in_channels if projection else out_channels // 2
        out = conv_out_size(size, kernel, stride)
        hw_in, hw_out = size * size, out * out
        flops = _pw(main_in, mid, hw_in) + _dw(mid, kernel, hw_out) + _pw(mid, main_out, hw_out)
        params = main_in * mid + mid * kernel * kernel + mid * main_out + _bn_params(2 * mid + main_out)
        if projection:
            flops += _dw(in_channels, kernel, hw_out) + _pw(in_channels, in_channels, hw_out)
            params += in_channels * kernel * kernel + in_channels * in_channels + _bn_params(2 * in_channels)
        return LayerCost(flops, params), out


class XceptionBlock(Block):
    """SPOS Xception-like unit: (dw 3x3 -> 1x1) three times in the main branch."""

    kernel = 3

    def __init__(self, in_channels: int, out_channels: int, max_mid: int, stride: int):
        super().__init__(in_channels, out_channels, max_mid, stride)
        c = self.main_in
        self.dw1 = nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)
        self.bn1 = SlicedBatchNorm2d(c)
        self.pw1 = nn.Conv2d(c, max_mid, 1, bias=False)
        self.bn2 = SlicedBatchNorm2d(max_mid)
        self.dw2 = nn.Conv2d(max_mid, max_mid, 3, 1, 1, groups=max_mid, bias=False)
        self.bn3 = SlicedBatchNorm2d(max_mid)
        self.pw2 = nn.Conv2d(max_mid, max_mid, 1, bias=False)
        self.bn4 = SlicedBatchNorm2d(max_mid)
        self.dw3 = nn.Conv2d(max_mid, max_mid, 3, 1, 1, groups=max_mid, bias=False)
        self.bn5 = SlicedBatchNorm2d(max_mid)
        self.pw3 = nn.Conv2d(max_mid, self.main_out, 1, bias=False)
        self.bn6 = SlicedBatchNorm2d(self.main_out)
        if self.projection:
            self.proj_dw = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False)
            self.proj_bn1 = SlicedBatchNorm2d(in_channels)
            self.proj_pw = nn.Conv2d(in_channels, in_channels, 1, bias=False)
            self.proj_bn2 = SlicedBatchNorm2d(in_channels)

    def _main(self, x: torch.Tensor, mid: int, kernel: int | None = None) -> torch.Tensor:
        x = self.bn1(_conv(self.dw1, x))
        x = F.relu(self.bn2(_conv(self.pw1, x, mid)))
        x = self.bn3(_conv(self.dw2, x))
        x = F.relu(self.bn4(_conv(self.pw2, x, mid)))
        x = self.bn5(_conv(self.dw3, x))
        return F.relu(self.bn6(_conv(self.pw3, x)))

    def _proj(self, x: torch.Tensor, kernel: int | None = None) -> torch.Tensor:
        return ShuffleBlock._proj(self, x, None)

    @classmethod
    def cost(cls, in_channels, out_channels, mid, stride, size):
        projection = stride != 1 or in_channels != out_channels
        main_in = in_channels if projection else in_channels // 2
        main_out = out_channels - in_channels if projection else out_channels // 2
        out = conv_out_size(size, 3, stride)
        hw_out = out * out
        flops = (_dw(main_in, 3, hw_out) + _pw(main_in, mid, hw_out) + 2 * _dw(mid, 3, hw_out)
                 + _pw(mid, mid, hw_out) + _pw(mid, main_out, hw_out))
        params = (main_in * 9 + main_in * mid + 2 * mid * 9 + mid * mid + mid * main_out
                  + _bn_params(main_in + 4 * mid + main_out))
        if projection:
            flops += _dw(in_channels, 3, hw_out) + _pw(in_channels, in_channels, hw_out)
            params += in_channels * 9 + in_channels * in_channels + _bn_params(2 * in_channels)
        return LayerCost(flops, params), out


def make_block(block_type: str, in_channels: int, out_channels: int, mid: int, stride: int) -> Block:
    if block_type == "xception":
        return XceptionBlock(in_channels, out_channels, mid, stride)
    if block_type in ("shuffle3", "shuffle5", "shuffle7"):
        return ShuffleBlock(in_channels, out_channels, mid, stride, kernel=int(block_type[-1]))
    raise ValueError(f"unknown block type {block_type!r}; expected one of {', '.join(BLOCK_TYPES)}")


def block_cost(block_type: str, in_channels: int, out_channels: int, mid: int, stride: int,
               size: int) -> tuple[LayerCost, int]:
    if block_type == "xception":
        return XceptionBlock.cost(in_channels, out_channels, mid, stride, size)
    return ShuffleBlock.cost(in_channels, out_channels, mid, stride, size, kernel=int(block_type[-1]))


class ConvBNReLU(nn.Module):
    """Stem and final 1x1 layer: conv (no bias) -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))

    @staticmethod
    def cost(in_channels: int, out_channels: int, kernel: int, stride: int, size: int) -> tuple[LayerCost, int]:
        out = conv_out_size(size, kernel, stride)
        return LayerCost(2 * in_channels * out_channels * kernel * kernel * out * out,
                         in_channels * out_channels * kernel * kernel + 2 * out_channels), out
