"""Reductions the trainer needs under torchrun; the process group itself is `hetsearch.utils.process_group`
(shared with the sharded index build)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from hetsearch.utils.process_group import DistContext, barrier, init_distributed

__all__ = ["DistContext", "init_distributed", "barrier", "all_reduce_mean", "all_reduce_gradients"]


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.item() / ctx.world_size


def all_reduce_gradients(params: list[torch.nn.Parameter], ctx: DistContext) -> None:
    """Average the gradients of parameters DDP does not manage (the loss module's) over the processes."""
    if not ctx.enabled:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad.div_(ctx.world_size)
