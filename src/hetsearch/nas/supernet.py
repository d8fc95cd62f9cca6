"""The CMP-NAS supernet, registered as the backbone `cmpnas_supernet` when this module (or
`hetsearch.nas`) is imported:

- `cmpnas_supernet` (options: the search-space fields, plus `seed`, `sample_mflops`,
  `sample_embedding_dim`, `eval_arch`): every choice block of every layer, weights shared across
  widths. In training mode with no fixed path, each forward samples a fresh uniform path (SPOS);
  the path of forward number t depends only on (`seed`, t) and t is the `path_step` buffer
  (saved in the state dict), so a resumed run replays the same paths. With `sample_mflops:
  [lo, hi]` only paths whose whole-model FLOPs (embedding head of `sample_embedding_dim`)
  lie in [lo, hi] MFLOPs are drawn (rejection sampling on the cost table). `set_path(arch)`
  fixes the path (evaluation, BN recalibration); in eval mode without a fixed path the
  supernet runs `eval_arch` (default: ShuffleNet 3x3 everywhere at the middle width).

One path as an ordinary network is the backbone `cmpnas` (`hetsearch.models.cmpnas`: built from
the same block classes, and without the search, so a server can load a searched model). The
ordinary Trainer trains both; `standalone_from_supernet` cuts a path's weights out of a trained
supernet into a standalone `cmpnas` EmbeddingModel whose outputs equal the supernet's on that path.
"""

from __future__ import annotations

import zlib
from typing import Optional

import torch
from torch import nn

from hetsearch.errors import ConfigError
from hetsearch.models import create_model
from hetsearch.models.cmpnas import CmpNasNet, Tail
from hetsearch.models.cmpnas_blocks import ConvBNReLU, make_block
from hetsearch.models.registry import register_backbone
from hetsearch.nas.cost import CostTable
from hetsearch.nas.space import Architecture, SearchSpace, space_from_options

_MAX_REJECTIONS = 10_000


class CmpNasSupernet(nn.Module):
    """All choices of `space`; runs one path per forward (see the module doc)."""

    def __init__(self, space: SearchSpace, in_chans: int = 1, *, image_size: int = 28, seed: int = 0,
                 sample_mflops: Optional[list] = None, sample_embedding_dim: int = 128,
                 eval_arch: Architecture | str | None = None, share_kernels: bool = True,
                 warmup_steps: int = 0, warmup_arch: Architecture | str | None = None):
        super().__init__()
        self.space, self.seed, self.in_chans, self.image_size = space, int(seed), in_chans, image_size
        self.share_kernels, self.warmup_steps = bool(share_kernels), int(warmup_steps)
        # choice -> (module key, kernel to run it with); shared ShuffleNet units hold the largest kernel
        shuffles = [b for b in space.blocks if b.startswith("shuffle")]
        max_kernel = max((int(b[-1]) for b in shuffles), default=3)
        self._route = {b: (("shuffle", int(b[-1])) if self.share_kernels and b in shuffles else (b, None))
                       for b in space.blocks}
        modules = {key: (f"shuffle{max_kernel}" if key == "shuffle" else key) for key, _ in self._route.values()}
        self.stem = ConvBNReLU(in_chans, space.stem_channels, space.stem_kernel, space.stem_stride)
        self.layers = nn.ModuleList(
            nn.ModuleDict({key: make_block(block, c_in, c_out, space.max_mid_channels(i), stride)
                           for key, block in modules.items()})
            for i, (c_in, c_out, stride) in enumerate(space.layers()))
        tail = Tail(space)
        self.last, self.pool = tail.last, tail.pool
        self.register_buffer("path_step", torch.zeros((), dtype=torch.int64))
        self.eval_arch = space.parse(eval_arch) if eval_arch is not None else space.uniform(
            space.blocks[0], (len(space.widths) - 1) // 2)
        self.warmup_arch = space.parse(warmup_arch) if warmup_arch is not None else self.eval_arch
        self._fixed: Architecture | None = None
        self.last_path: Architecture | None = None
        self.sample_range: tuple[float, float] | None = None
        self._cost = None
        if sample_mflops is not None:
            if len(sample_mflops) != 2 or not float(sample_mflops[0]) <= float(sample_mflops[1]):
                raise ConfigError(f"cmpnas_supernet sample_mflops: expected [min, max], got {sample_mflops!r}")
            self._cost = CostTable(space, image_size=image_size, in_chans=in_chans, embedding_dim=sample_embedding_dim)
            lo, hi = (float(v) * 1e6 for v in sample_mflops)
            space_lo, space_hi = self._cost.range()
            if hi < space_lo or lo > space_hi:
                raise ConfigError(f"cmpnas_supernet sample_mflops {list(sample_mflops)}: outside the space's range "
                                  f"{space_lo / 1e6:.3f}..{space_hi / 1e6:.3f} MFLOPs")
            self.sample_range = (lo, hi)
            if self.warmup_steps and not lo <= self._cost.flops(self.warmup_arch) <= hi:
                raise ConfigError(f"cmpnas_supernet warmup_arch {self.warmup_arch.id} "
                                  f"({self._cost.flops(self.warmup_arch) / 1e6:.3f} MFLOPs) is outside sample_mflops "
                                  f"{list(sample_mflops)}; choose another warmup_arch")

    @property
    def feature_dim(self) -> int:
        return self.space.feature_dim

    # ------------------------------------------------------------------ paths
    def set_path(self, arch: Architecture | str | None) -> None:
        """Fix the path for every following forward (None: sample again in training mode)."""
        self._fixed = None if arch is None else self.space.parse(arch)

    @property
    def fixed_path(self) -> Architecture | None:
        return self._fixed

    def keep_probability(self, step: int) -> float:
        """Path warm-up: probability that a layer keeps its `warmup_arch` choice at `step`
        (1 -> 0 linearly over `warmup_steps`, then 0: uniform sampling)."""
        return max(0.0, 1.0 - step / self.warmup_steps) if self.warmup_steps else 0.0

    def path_for_step(self, step: int) -> Architecture:
        """The path sampled at training forward number `step` (a pure function of seed and step)."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(b"cmpnas-path") + step) % 2**63)
        keep = self.keep_probability(step)
        for _ in range(_MAX_REJECTIONS):
            arch = self.space.sample(generator)
            if keep > 0:
                mask = (torch.rand(len(arch), generator=generator) < keep).tolist()
                arch = Architecture(tuple(r if k else a for a, r, k in zip(arch.blocks, self.warmup_arch.blocks, mask)),
                                    tuple(r if k else a for a, r, k in zip(arch.widths, self.warmup_arch.widths, mask)))
            if self.sample_range is None:
                return arch
            flops = self._cost.flops(arch)
            if self.sample_range[0] <= flops <= self.sample_range[1]:
                return arch
        raise ConfigError(f"cmpnas_supernet: no path within sample_mflops after {_MAX_REJECTIONS} draws; widen the range")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fixed is not None:
            arch = self._fixed
        elif self.training:
            arch = self.path_for_step(int(self.path_step))
            self.path_step += 1
        else:
            arch = self.eval_arch
        self.last_path = arch
        x = self.stem(x)
        for i, (choices, block, w) in enumerate(zip(self.layers, arch.blocks, arch.widths)):
            key, kernel = self._route[block]
            x = choices[key](x, self.space.mid_channels(i, w), kernel)
        return self.pool(self.last(x))

    # ------------------------------------------------------------------ weight inheritance
    def extract(self, arch: Architecture | str) -> CmpNasNet:
        """A standalone network of `arch` holding this supernet's weights for that path."""
        arch = self.space.parse(arch)
        net = CmpNasNet(self.space, arch, self.in_chans)
        source = self.state_dict()
        target = {}
        for name, tensor in net.state_dict().items():
            parts = name.split(".")
            if parts[0] == "layers":
                parts.insert(2, self._route[arch.blocks[int(parts[1])]][0])
            src = source[".".join(parts)]
            # leading slices of channels; the centre of larger (shared) kernels
            index = tuple(slice(0, n) if d < 2 else slice((m - n) // 2, (m - n) // 2 + n)
                          for d, (n, m) in enumerate(zip(tensor.shape, src.shape)))
            target[name] = src[index].clone() if tensor.dim() else src.clone()
        net.load_state_dict(target)
        return net


def _space(image_size: int, options: dict) -> SearchSpace:
    return space_from_options(image_size, options)


@register_backbone("cmpnas_supernet")
def cmpnas_supernet(*, in_chans: int, image_size: int, seed: int = 0, sample_mflops: Optional[list] = None,
                    sample_embedding_dim: int = 128, eval_arch: Optional[str] = None, share_kernels: bool = True,
                    warmup_steps: int = 0, warmup_arch: Optional[str] = None,
                    **space_options) -> tuple[nn.Module, int]:
    """The CMP-NAS supernet: one sampled path per training batch (registered by hetsearch.nas)."""
    net = CmpNasSupernet(_space(image_size, space_options), in_chans, image_size=image_size, seed=seed,
                         sample_mflops=sample_mflops, sample_embedding_dim=sample_embedding_dim, eval_arch=eval_arch,
                         share_kernels=share_kernels, warmup_steps=warmup_steps, warmup_arch=warmup_arch)
    return net, net.feature_dim


_SUPERNET_ONLY = ("seed", "sample_mflops", "sample_embedding_dim", "eval_arch", "share_kernels", "warmup_steps",
                  "warmup_arch")


def standalone_args(supernet_args: dict, arch: Architecture | str) -> dict:
    """backbone_args of the `cmpnas` network for `arch` from the supernet's backbone_args."""
    args = {k: v for k, v in supernet_args.items() if k not in _SUPERNET_ONLY}
    args["arch"] = arch.id if isinstance(arch, Architecture) else str(arch)
    return args


def standalone_from_supernet(model, arch: Architecture | str):
    """EmbeddingModel with backbone `cmpnas` for `arch`, weights inherited from a supernet
    EmbeddingModel (backbone path, embedding head and classifier)."""
    spec = model.spec
    if spec.backbone != "cmpnas_supernet":
        raise ConfigError(f"expected a cmpnas_supernet model, got backbone {spec.backbone!r}")
    fields = {k: v for k, v in spec.to_dict().items() if k not in ("backbone", "backbone_args", "num_classes")}
    out = create_model("cmpnas", num_classes=spec.num_classes, backbone_args=standalone_args(spec.backbone_args, arch),
                       **fields)
    out.backbone.load_state_dict(model.backbone.extract(arch).state_dict())
    out.embedding_head.load_state_dict(model.embedding_head.state_dict())
    out.classifier.load_state_dict(model.classifier.state_dict())
    return out
