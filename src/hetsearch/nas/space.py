"""The CMP-NAS search space: the network family's layout (`hetsearch.models.cmpnas_arch`) plus
the search operators over it: uniform sampling, SPOS mutation and uniform crossover.

The layout (fixed skeleton, per-layer block and width choices, `Architecture` ids) lives in
`models`, so a searched network is built and served without the search; what only a search
needs lives here. docs/nas.md explains the space.
"""

from __future__ import annotations

import torch

from hetsearch.models.cmpnas_arch import Architecture, CmpNasLayout

__all__ = ["Architecture", "SearchSpace", "space_from_options"]


class SearchSpace(CmpNasLayout):
    """A `CmpNasLayout` (same fields, ids and checks) with the random operators of the search.
    Every random choice comes from the caller's `torch.Generator`."""

    def sample(self, generator: torch.Generator) -> "Architecture":
        """A uniformly random architecture."""
        n = self.num_layers
        blocks = torch.randint(len(self.blocks), (n,), generator=generator).tolist()
        widths = torch.randint(len(self.widths), (n,), generator=generator).tolist()
        return Architecture(tuple(self.blocks[b] for b in blocks), tuple(widths))

    def mutate(self, arch: "Architecture", prob: float, generator: torch.Generator) -> "Architecture":
        """Resample each layer's (block, width) with probability `prob` (SPOS mutation)."""
        blocks, widths = list(arch.blocks), list(arch.widths)
        for i in range(self.num_layers):
            if torch.rand((), generator=generator).item() < prob:
                blocks[i] = self.blocks[int(torch.randint(len(self.blocks), (), generator=generator))]
                widths[i] = int(torch.randint(len(self.widths), (), generator=generator))
        return Architecture(tuple(blocks), tuple(widths))

    def crossover(self, a: "Architecture", b: "Architecture", generator: torch.Generator) -> "Architecture":
        """Each layer's (block, width) taken from `a` or `b` with equal probability."""
        pick = torch.randint(2, (self.num_layers,), generator=generator).tolist()
        blocks = tuple(a.blocks[i] if p == 0 else b.blocks[i] for i, p in enumerate(pick))
        widths = tuple(a.widths[i] if p == 0 else b.widths[i] for i, p in enumerate(pick))
        return Architecture(blocks, widths)


def space_from_options(image_size: int, options: dict | None) -> SearchSpace:
    """A SearchSpace from backbone/search options (YAML mappings: lists become tuples)."""
    return SearchSpace.for_input(image_size, **dict(options or {}))
