"""Learning-rate schedule: linear warm-up, then cosine decay to zero, stepped per batch."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from hetsearch.errors import ConfigError


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(modules: torch.nn.Module | Sequence[torch.nn.Module], cfg) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over the parameters of `modules` that require a gradient (the model,
    then the loss module: a compatibility term's own parameters), each once, in that order; no
    weight decay on norm layers, biases and scalars (tensors of at most one dimension)."""
    modules = [modules] if isinstance(modules, torch.nn.Module) else list(modules)
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for param in module.parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    check_optimizer(cfg.optimizer)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


OPTIMIZERS = ("sgd", "adamw")


def check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer: got {name!r}, expected 'sgd' or 'adamw'")
