"""Random paths under a FLOPs budget, without a supernet: `hetsearch nas sample`.

A path is drawn as the search draws its random candidates (`Moves.random`: uniform, narrowed until
it fits), so this is the baseline a search has to beat. On Fashion-MNIST at 1.9 MFLOPs it is as good
as the search (docs/nas.md, "Does the search pay?", F4): there a random path, retrained, is what to
train when a supernet and a search are not worth their cost. With `min_mflops`, one path is drawn per
equal FLOPs bin of [min_mflops, max_mflops] (paths that differ; the paper study's f_wide part).

Each path's record has the `backbone_args` of the `cmpnas` network, as a search's best.json does,
so `hetsearch nas retrain CONFIG PATH.json` trains it.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch

from hetsearch.config import TrainRunConfig
from hetsearch.errors import ConfigError
from hetsearch.nas.cost import CostTable
from hetsearch.nas.space import Architecture, SearchSpace, space_from_options
from hetsearch.nas.strategies import Moves
from hetsearch.nas.supernet import standalone_args

MAX_TRIES = 2000   # draws per wanted path before giving up (as the search's default)


@dataclass(frozen=True)
class PathSpace:
    """The search space of a supernet training config, and each path's whole-model cost there."""

    space: SearchSpace
    table: CostTable
    backbone_args: dict   # the supernet's model.backbone_args

    @classmethod
    def of_config(cls, cfg: TrainRunConfig) -> "PathSpace":
        options = standalone_args(cfg.model.backbone_args, "")
        options.pop("arch")
        space = space_from_options(cfg.data.image_size, options)
        table = CostTable(space, image_size=cfg.data.image_size, in_chans=cfg.data.channels,
                          embedding_dim=cfg.model.embedding_dim)
        return cls(space, table, dict(cfg.model.backbone_args))

    def mflops(self, arch: Architecture) -> float:
        return self.table.flops(arch) / 1e6

    def record(self, arch: Architecture) -> dict:
        """What `hetsearch nas retrain` reads (backbone_args), with the path's cost."""
        cost = self.table(arch)
        return {"arch": arch.id, "mflops": cost.flops / 1e6, "params": cost.params, "origin": "random",
                "backbone_args": standalone_args(self.backbone_args, arch)}


def draw_paths(paths: PathSpace, count: int, *, max_mflops: float, min_mflops: float | None = None,
               seed: int = 0) -> list[Architecture]:
    """`count` distinct random paths costing at most `max_mflops`; with `min_mflops`, the i-th in the i-th
    of `count` equal bins of [min_mflops, max_mflops]. Depends only on the arguments."""
    lo = paths.table.range()[0] / 1e6
    if max_mflops < lo:
        raise ConfigError(f"max_mflops {max_mflops:g}: the space's cheapest path costs {lo:.3f} MFLOPs; "
                          "raise the budget")
    if min_mflops is not None and not min_mflops < max_mflops:
        raise ConfigError(f"min_mflops {min_mflops:g}: expected below max_mflops ({max_mflops:g})")
    generator, taken, out = torch.Generator().manual_seed(seed), set(), []
    width = None if min_mflops is None else (max_mflops - min_mflops) / count
    bins = ([(None, max_mflops, count)] if width is None else
            [(min_mflops + width * i, min_mflops + width * (i + 1), 1) for i in range(count)])
    for low, high, wanted in bins:
        moves = Moves(paths.space, paths.mflops, generator, known=taken, max_cost=high, min_cost=low,
                      max_tries=MAX_TRIES, mutation_prob=0.1)
        drawn = moves.random(wanted)
        if width is not None and not drawn:
            raise ConfigError(f"no path found costing {low:.3f}-{high:.3f} MFLOPs in {MAX_TRIES} draws (the "
                              f"space's cheapest costs {lo:.3f}): raise min_mflops or draw fewer paths")
        taken.update(a.id for a in drawn)
        out += drawn
    return out
