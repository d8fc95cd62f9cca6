"""Cost model of the search space: exact FLOPs and parameters without a forward pass, and an
optional measured CPU latency table.

FLOPs follow the project convention (2 x MACs, what `torch.utils.flop_counter` counts at
batch 1): convolutions and the embedding head's Linear; batch norms, activations, pooling and
the L2 normalisation count nothing. Parameters are those of the backbone and the embedding
head (as `ModelMeta.params`). The numbers equal `hetsearch.models.cost.count_flops` /
`ModelMeta.flops` of a standalone `create_model("cmpnas", ..., backbone_args={"arch": id})`
(tested on random architectures).

The cost of an architecture is a fixed part (stem, last 1x1 conv, embedding head) plus one
table entry per layer and choice, so predicting it is a few additions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hetsearch.models.cmpnas import CmpNasNet
from hetsearch.models.cmpnas_arch import Architecture, CmpNasLayout
from hetsearch.models.cmpnas_blocks import ConvBNReLU, LayerCost, block_cost, make_block


@dataclass(frozen=True)
class ArchCost:
    flops: int
    params: int

    @property
    def mflops(self) -> float:
        return self.flops / 1e6


class CostTable:
    """Per-layer, per-choice FLOPs/params of `space` at `image_size` px with `in_chans` channels
    and an embedding head of `embedding_dim` (0: backbone only)."""

    def __init__(self, space: CmpNasLayout, *, image_size: int, in_chans: int = 1, embedding_dim: int = 128):
        self.space, self.image_size, self.in_chans, self.embedding_dim = space, image_size, in_chans, embedding_dim
        stem, size = ConvBNReLU.cost(in_chans, space.stem_channels, space.stem_kernel, space.stem_stride, image_size)
        fixed_flops, fixed_params = stem.flops, stem.params
        self.table: list[dict[tuple[str, int], LayerCost]] = []
        self.input_sizes: list[int] = []
        for layer, (c_in, c_out, stride) in enumerate(space.layers()):
            entries, out_size = {}, size
            for block in space.blocks:
                for w in range(len(space.widths)):
                    entries[(block, w)], out_size = block_cost(block, c_in, c_out, space.mid_channels(layer, w),
                                                               stride, size)
            self.table.append(entries)
            self.input_sizes.append(size)
            size = out_size
        self.final_size = size
        if space.last_channels:
            last, _ = ConvBNReLU.cost(space.stage_channels[-1], space.last_channels, 1, 1, size)
            fixed_flops, fixed_params = fixed_flops + last.flops, fixed_params + last.params
        if embedding_dim:  # Linear(feature_dim, embedding_dim, bias=False) + BatchNorm1d(embedding_dim)
            fixed_flops += 2 * space.feature_dim * embedding_dim
            fixed_params += space.feature_dim * embedding_dim + 2 * embedding_dim
        self.fixed = LayerCost(fixed_flops, fixed_params)

    def __call__(self, arch: Architecture) -> ArchCost:
        flops, params = self.fixed.flops, self.fixed.params
        for entries, block, w in zip(self.table, arch.blocks, arch.widths):
            cost = entries[(block, w)]
            flops, params = flops + cost.flops, params + cost.params
        return ArchCost(flops, params)

    def flops(self, arch: Architecture) -> int:
        return self(arch).flops

    def extreme(self, largest: bool = False) -> Architecture:
        """The cheapest (or most expensive) architecture: per-layer argmin (argmax) of FLOPs."""
        pick = max if largest else min
        choices = [pick(entries, key=lambda c: (entries[c].flops, c)) for entries in self.table]
        return Architecture(tuple(b for b, _ in choices), tuple(w for _, w in choices))

    def range(self) -> tuple[int, int]:
        """(min, max) FLOPs over the whole space (per-layer minima/maxima: layers are independent)."""
        lo = self.fixed.flops + sum(min(c.flops for c in e.values()) for e in self.table)
        hi = self.fixed.flops + sum(max(c.flops for c in e.values()) for e in self.table)
        return lo, hi


class LatencyTable:
    """Measured CPU latency (seconds, batch `batch_size`) per layer and choice, plus the fixed
    part; an architecture's latency is predicted as the sum. Built by `measure`, stored as JSON."""

    def __init__(self, fixed: float, table: list[dict[str, float]], batch_size: int = 1, num_threads: int | None = None):
        self.fixed, self.table, self.batch_size, self.num_threads = fixed, table, batch_size, num_threads

    def __call__(self, arch: Architecture) -> float:
        return self.fixed + sum(entries[f"{b}:{w}"] for entries, b, w in zip(self.table, arch.blocks, arch.widths))

    def to_dict(self) -> dict:
        return {"unit": "seconds", "batch_size": self.batch_size, "num_threads": self.num_threads,
                "fixed": self.fixed, "table": self.table}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyTable":
        return cls(d["fixed"], d["table"], d.get("batch_size", 1), d.get("num_threads"))

    @classmethod
    def measure(cls, space: CmpNasLayout, *, image_size: int, in_chans: int = 1, embedding_dim: int = 128,
                batch_size: int = 1, repeats: int = 20, warmup: int = 3) -> "LatencyTable":
        """Time every (layer, block, width) in isolation on CPU (median of `repeats`)."""
        def median_time(fn) -> float:
            with torch.inference_mode():
                for _ in range(warmup):
                    fn()
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - start)
            return sorted(times)[len(times) // 2]

        net = CmpNasNet(space, space.smallest(), in_chans=in_chans).eval()
        x = torch.rand(batch_size, in_chans, image_size, image_size)
        head = torch.nn.Linear(space.feature_dim, embedding_dim, bias=False)
        fixed = median_time(lambda: net.stem(x))
        with torch.inference_mode():
            h = net.stem(x)
        table = []
        for layer, (c_in, c_out, stride) in enumerate(space.layers()):
            entries = {}
            for block in space.blocks:
                for w in range(len(space.widths)):
                    module = make_block(block, c_in, c_out, space.mid_channels(layer, w), stride).eval()
                    entries[f"{block}:{w}"] = median_time(lambda: module(h))
            table.append(entries)
            with torch.inference_mode():
                h = make_block(space.blocks[0], c_in, c_out, space.mid_channels(layer, 0), stride).eval()(h)
        fixed += median_time(lambda: head(net.pool(net.last(h))))
        return cls(fixed, table, batch_size, torch.get_num_threads())
