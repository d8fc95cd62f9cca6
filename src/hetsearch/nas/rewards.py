"""Search rewards (the paper's formulations), from a candidate's evaluation record:

- r1 = M(a, a)                  homogeneous accuracy only (ordinary NAS)
- r2 = M(a, g)                  heterogeneous accuracy only
- r3 = M(a, g) + alpha * M(a, a)  both; CMP-NAS's choice. Default alpha = 0.5 (docs/nas.md).

M is Recall@1 by default (`metric: map_at_r` uses MAP@R) on the validation split. Rewards are
registered by name (`reward.name`); a new one is a function of the record keys and alpha:

    @register_reward("r4")
    def my_reward(homo_key, hetero_key, alpha): return lambda record: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hetsearch.errors import ConfigError
from hetsearch.registries import REWARDS

METRICS = ("recall_at_1", "map_at_r")
Reward = Callable[[dict], float]  # evaluation record -> the scalar the search maximises
RewardFactory = Callable[[str, str, float], Reward]  # (homo key, hetero key, alpha) -> reward
register_reward = REWARDS.register
reward_names = REWARDS.names


@dataclass
class RewardConfig:
    name: str = "r3"
    alpha: float = 0.5
    metric: str = "recall_at_1"

    def validate(self) -> None:
        REWARDS.check(self.name)
        if self.metric not in METRICS:
            raise ConfigError(f"reward.metric: got {self.metric!r}, expected one of {', '.join(METRICS)}")
        if self.alpha < 0:
            raise ConfigError(f"reward.alpha: expected >= 0, got {self.alpha}")


def make_reward(cfg: RewardConfig) -> Reward:
    """record (with homo_<metric> and hetero_<metric>) -> reward."""
    cfg.validate()
    return REWARDS[cfg.name](f"homo_{cfg.metric}", f"hetero_{cfg.metric}", float(cfg.alpha))


@register_reward("r1")
def homogeneous(homo_key: str, hetero_key: str, alpha: float) -> Reward:
    """M(a, a) only (ordinary NAS)."""
    return lambda r: float(r[homo_key])


@register_reward("r2")
def heterogeneous(homo_key: str, hetero_key: str, alpha: float) -> Reward:
    """M(a, g) only."""
    return lambda r: float(r[hetero_key])


@register_reward("r3")
def both(homo_key: str, hetero_key: str, alpha: float) -> Reward:
    """M(a, g) + alpha * M(a, a) (CMP-NAS)."""
    return lambda r: float(r[hetero_key]) + alpha * float(r[homo_key])
