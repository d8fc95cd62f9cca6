"""Model cost counted from the model itself: FLOPs and parameters (measured latency is
`hetsearch.eval.cost`).

FLOPs convention: **FLOPs = 2 x MACs**. ``count_flops`` uses ``torch.utils.flop_counter``, which
counts matmul-like ops (convolutions, linear/addmm, bmm, attention) as 2 x MACs and does not count
element-wise work (bias adds, activations, normalisation, pooling); e.g. a 3->8 3x3 convolution
with padding 1 on a 1x3x8x8 input costs 2 * (8*8*8 outputs) * (3*3*3 MACs each) = 27,648 FLOPs.
In `models` (not `eval`) because `save_checkpoint` records both (docs/architecture.md, "Layers").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hetsearch.utils.torch_modules import eval_mode, model_device

__all__ = ["count_flops", "count_params"]


def count_flops(model: nn.Module, input_shape: Sequence[int] = (1, 1, 28, 28)) -> int:
    """FLOPs (= 2 x MACs) of one forward pass at ``input_shape`` (use batch 1 to report per-image
    cost, as hetsearch does). The model runs once in eval mode on a zero input on its own
    device; its train/eval mode is restored."""
    shape = tuple(int(s) for s in input_shape)
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.inference_mode(), counter:
        model(torch.zeros(shape, device=device, dtype=dtype))
    return int(counter.get_total_flops())


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
