"""CMP-NAS architectures: the layout of the network family and its architecture ids.

The family is a SPOS-style ShuffleNetV2 adapted to the input size. An architecture picks, for
every choice layer, one block type (`BLOCK_TYPES`: ShuffleNetV2 unit 3x3 / 5x5 / 7x7,
Xception-like unit) and one hidden-width multiplier (`widths`, applied to the layer's base
hidden width = half its output channels). Layer output channels, strides and the stem are fixed
by the layout (`CmpNasLayout`); the first layer of each stage changes width/stride (projection
unit), the others are channel-split units.

`Architecture` is a small frozen value object; its `id` is stable and self-describing:
one token per layer, `<block code><width index>`, joined by "-", e.g. `30-52-x1-72`
(block codes: 3, 5, 7 = ShuffleNetV2 kxk, x = Xception; width index 0 = narrowest).

Default layouts (`CmpNasLayout.for_input`): see `_SMALL_INPUT_DEFAULT` (28x28 / 32x32 images)
and `_IMAGENET_DEFAULT` (the original SPOS layout for 224 px). docs/nas.md explains the choices.

Here in `models` so that a searched architecture's network (`hetsearch.models.cmpnas`) is built
without the search; the search space (`hetsearch.nas.space.SearchSpace`) is this layout plus
sampling, mutation and crossover.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hetsearch.errors import ConfigError
from hetsearch.models.cmpnas_blocks import BLOCK_CODES, BLOCK_TYPES

_CODE_TO_BLOCK = {code: name for name, code in BLOCK_CODES.items()}


@dataclass(frozen=True)
class CmpNasLayout:
    """Fixed skeleton + per-layer choices. All fields are plain values (YAML-ready)."""

    stem_channels: int = 16
    stem_stride: int = 2
    stem_kernel: int = 3
    stage_channels: tuple[int, ...] = (32, 64, 128)
    stage_layers: tuple[int, ...] = (2, 3, 2)
    stage_strides: tuple[int, ...] = (1, 2, 2)
    blocks: tuple[str, ...] = BLOCK_TYPES
    widths: tuple[float, ...] = (0.5, 1.0, 1.5)
    last_channels: int = 256         # final 1x1 conv width before pooling (0: none)

    def __post_init__(self):
        for name in ("stage_channels", "stage_layers", "stage_strides", "blocks", "widths"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    # ---------------------------------------------------------------- construction
    @classmethod
    def for_input(cls, image_size: int, **options: Any) -> "CmpNasLayout":
        """The default layout for `image_size` px inputs, with `options` overriding fields."""
        defaults = dict(_SMALL_INPUT_DEFAULT if image_size <= 64 else _IMAGENET_DEFAULT)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"search space: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        defaults.update(options)
        return cls(**defaults)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def validate(self) -> None:
        n = len(self.stage_channels)
        if not (len(self.stage_layers) == len(self.stage_strides) == n) or n == 0:
            raise ConfigError("search space: stage_channels, stage_layers and stage_strides need one entry per stage "
                              f"(got {len(self.stage_channels)}, {len(self.stage_layers)}, {len(self.stage_strides)})")
        unknown = [b for b in self.blocks if b not in BLOCK_TYPES]
        if unknown or not self.blocks or len(set(self.blocks)) != len(self.blocks):
            raise ConfigError(f"search space: blocks must be distinct names from {', '.join(BLOCK_TYPES)}; got {list(self.blocks)}")
        if not self.widths or any(w <= 0 for w in self.widths) or list(self.widths) != sorted(set(self.widths)):
            raise ConfigError(f"search space: widths must be increasing positive multipliers, got {list(self.widths)}")
        if len(self.widths) > 10:
            raise ConfigError("search space: at most 10 width choices (one digit in architecture ids)")
        if any(s not in (1, 2) for s in (*self.stage_strides, self.stem_stride)):
            raise ConfigError("search space: strides must be 1 or 2")
        if any(k < 1 for k in self.stage_layers):
            raise ConfigError(f"search space: every stage needs at least one layer, got {list(self.stage_layers)}")
        previous = self.stem_channels
        for i, c in enumerate(self.stage_channels):
            if c <= previous or c % 2:
                raise ConfigError(f"search space: stage {i} channels must be even and wider than the previous "
                                  f"stage/stem ({previous}), got {c}")
            previous = c

    # ---------------------------------------------------------------- layers
    @property
    def num_layers(self) -> int:
        return sum(self.stage_layers)

    def layers(self) -> list[tuple[int, int, int]]:
        """(in_channels, out_channels, stride) of every choice layer."""
        out, c_in = [], self.stem_channels
        for c, n, s in zip(self.stage_channels, self.stage_layers, self.stage_strides):
            for i in range(n):
                out.append((c_in if i == 0 else c, c, s if i == 0 else 1))
            c_in = c
        return out

    def mid_channels(self, layer: int, width_index: int) -> int:
        """Hidden width of `layer` at width choice `width_index`."""
        base = self.layers()[layer][1] // 2
        return max(1, int(round(base * self.widths[width_index])))

    def max_mid_channels(self, layer: int) -> int:
        return self.mid_channels(layer, len(self.widths) - 1)

    @property
    def feature_dim(self) -> int:
        return self.last_channels or self.stage_channels[-1]

    @property
    def size(self) -> int:
        """Number of architectures."""
        return (len(self.blocks) * len(self.widths)) ** self.num_layers

    # ---------------------------------------------------------------- architectures
    def check(self, arch: "Architecture") -> "Architecture":
        if len(arch.blocks) != self.num_layers or len(arch.widths) != self.num_layers:
            raise ConfigError(f"architecture {arch.id}: has {len(arch.blocks)} layers, the search space "
                              f"{self.num_layers} ({'+'.join(map(str, self.stage_layers))})")
        bad_blocks = [b for b in arch.blocks if b not in self.blocks]
        if bad_blocks:
            raise ConfigError(f"architecture {arch.id}: block(s) {', '.join(sorted(set(bad_blocks)))} are not in the "
                              f"search space ({', '.join(self.blocks)})")
        if any(not 0 <= w < len(self.widths) for w in arch.widths):
            raise ConfigError(f"architecture {arch.id}: width index outside 0..{len(self.widths) - 1}")
        return arch

    def parse(self, arch: "Architecture | str") -> "Architecture":
        return self.check(arch if isinstance(arch, Architecture) else Architecture.from_id(arch))

    def uniform(self, block: str | None = None, width_index: int | None = None) -> "Architecture":
        """The architecture with the same choice in every layer (defaults: first block, widest)."""
        block = self.blocks[0] if block is None else block
        width_index = len(self.widths) - 1 if width_index is None else width_index
        return self.check(Architecture((block,) * self.num_layers, (width_index,) * self.num_layers))

    def smallest(self) -> "Architecture":
        """ShuffleNet 3x3 (or the first block) at the narrowest width everywhere (cost.CostTable.extreme
        gives the truly cheapest architecture)."""
        return self.uniform(min(self.blocks, key=BLOCK_TYPES.index), 0)

    def largest(self) -> "Architecture":
        return self.uniform("xception" if "xception" in self.blocks else self.blocks[-1], len(self.widths) - 1)


# 28x28 / 32x32 inputs (Fashion-MNIST, CIFAR): see docs/nas.md "Search space".
_SMALL_INPUT_DEFAULT: dict[str, Any] = dict(
    stem_channels=8, stem_stride=2, stem_kernel=3,
    stage_channels=(16, 32, 64, 128), stage_layers=(2, 3, 4, 2), stage_strides=(1, 2, 2, 2),
    blocks=BLOCK_TYPES, widths=(0.25, 0.5, 1.0, 2.0, 4.0), last_channels=256)

# The original SPOS ShuffleNetV2 supernet at 224 px: 20 layers in stages [4, 4, 8, 4].
_IMAGENET_DEFAULT: dict[str, Any] = dict(
    stem_channels=16, stem_stride=2, stem_kernel=3,
    stage_channels=(64, 160, 320, 640), stage_layers=(4, 4, 8, 4), stage_strides=(2, 2, 2, 2),
    blocks=BLOCK_TYPES, widths=(1.0,), last_channels=1024)


@dataclass(frozen=True)
class Architecture:
    """One path through the supernet: a block type and a width index per choice layer."""

    blocks: tuple[str, ...]
    widths: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.blocks) != len(self.widths):
            raise ConfigError(f"architecture: {len(self.blocks)} blocks but {len(self.widths)} widths")
        for b in self.blocks:
            if b not in BLOCK_CODES:
                raise ConfigError(f"architecture: unknown block {b!r}; expected one of {', '.join(BLOCK_TYPES)}")

    @property
    def id(self) -> str:
        return "-".join(f"{BLOCK_CODES[b]}{w}" for b, w in zip(self.blocks, self.widths))

    @classmethod
    def from_id(cls, arch_id: str) -> "Architecture":
        tokens = str(arch_id).strip().split("-")
        blocks, widths = [], []
        for token in tokens:
            if len(token) != 2 or token[0] not in _CODE_TO_BLOCK or not token[1].isdigit():
                raise ConfigError(f"architecture id {arch_id!r}: token {token!r} is not <block code><width digit> "
                                  f"(block codes: {', '.join(f'{c}={n}' for c, n in _CODE_TO_BLOCK.items())})")
            blocks.append(_CODE_TO_BLOCK[token[0]])
            widths.append(int(token[1]))
        return cls(tuple(blocks), tuple(widths))

    def __str__(self) -> str:
        return self.id

    def __len__(self) -> int:
        return len(self.blocks)


def layout_from_options(image_size: int, options: dict | None) -> CmpNasLayout:
    """A CmpNasLayout from backbone options (YAML mappings: lists become tuples)."""
    return CmpNasLayout.for_input(image_size, **dict(options or {}))
