"""Search rewards (the paper's formulations), from a candidate's evaluation record:

- r1 = M(a, a)                  homogeneous accuracy only (ordinary NAS)
- r2 = M(a, g)                  heterogeneous accuracy only
- r3 = M(a, g) + alpha * M(a, a)  both; CMP-NAS's choice. Default alpha = 0.5 (docs/nas.md).

M is Recall@1 by default (`metric: map_at_r` uses MAP@R) on the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hetsearch.errors import ConfigError

REWARDS = ("r1", "r2", "r3")
METRICS = ("recall_at_1", "map_at_r")


@dataclass
class RewardConfig:
    name: str = "r3"
    alpha: float = 0.5
    metric: str = "recall_at_1"

    def validate(self) -> None:
        if self.name not in REWARDS:
            raise ConfigError(f"reward.name: got {self.name!r}, expected one of {', '.join(REWARDS)}")
        if self.metric not in METRICS:
            raise ConfigError(f"reward.metric: got {self.metric!r}, expected one of {', '.join(METRICS)}")
        if self.alpha < 0:
            raise ConfigError(f"reward.alpha: expected >= 0, got {self.alpha}")


def make_reward(cfg: RewardConfig) -> Callable[[dict], float]:
    """record (with homo_<metric> and hetero_<metric>) -> reward."""
    cfg.validate()
    homo_key, hetero_key = f"homo_{cfg.metric}", f"hetero_{cfg.metric}"
    if cfg.name == "r1":
        return lambda r: float(r[homo_key])
    if cfg.name == "r2":
        return lambda r: float(r[hetero_key])
    alpha = float(cfg.alpha)
    return lambda r: float(r[hetero_key]) + alpha * float(r[homo_key])
