"""Model cost: measured latency. FLOPs and parameter counts are `hetsearch.models.cost`
(`count_flops`, `count_params`: checkpoints record them, and `models` sits below `eval`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from hetsearch.utils.torch_modules import eval_mode, on_device

__all__ = ["measure_latency"]


def _input_shape_without_batch(input_shape: Sequence[int]) -> tuple[int, ...]:
    """``(C, H, W)`` from ``(C, H, W)`` or ``(N, C, H, W)``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        return shape[1:]
    if len(shape) == 3:
        return shape
    raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {tuple(input_shape)}")


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 1, 28, 28),
    batch_sizes: Sequence[int] = (1, 256),
    repeats: int = 20,
    warmup: int = 3,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
) -> dict[int, float]:
    """Median wall-clock seconds of one forward pass per batch size.

    ``input_shape`` is ``(C, H, W)`` or ``(N, C, H, W)`` (N is replaced by each batch size). The
    model runs in eval mode under ``torch.inference_mode`` on random float inputs in [0, 1]
    (channels-last memory format when ``channels_last``, as ``embed`` feeds it), with ``warmup``
    untimed passes first; CUDA is synchronised around each timed pass. Uses the current
    ``torch.get_num_threads()``. The caller's model is not moved (a copy is, if needed).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    image_shape = _input_shape_without_batch(input_shape)
    device = torch.device(device)
    runner = on_device(model, device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    medians: dict[int, float] = {}
    with eval_mode(runner), torch.inference_mode():
        for batch_size in batch_sizes:
            x = torch.rand((int(batch_size), *image_shape), generator=generator).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            timings = []
            for step in range(warmup + repeats):
                _synchronize(device)
                start = time.perf_counter()
                runner(x)
                _synchronize(device)
                if step >= warmup:
                    timings.append(time.perf_counter() - start)
            medians[int(batch_size)] = statistics.median(timings)
    return medians


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
