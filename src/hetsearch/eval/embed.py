"""Embed uint8 images with a model, in batches."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch import nn

from hetsearch.errors import DataError
from hetsearch.utils.terminal import is_terminal
from hetsearch.utils.torch_modules import eval_mode, model_device, on_device

__all__ = ["embed"]


def _as_uint8_images(images: Any) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        shape = tuple(getattr(images, "shape", ()))
        dtype = getattr(images, "dtype", type(images).__name__)
        raise DataError(
            f"images: expected a uint8 tensor N x C x H x W, got dtype {dtype} and shape {shape}"
        )
    return images


def embed(
    model: nn.Module,
    images_uint8: Any,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    channels_last: bool = True,
    normalize: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Embeddings ``(N, D)`` float32 of ``images_uint8`` (uint8 ``N x C x H x W``, torch or numpy).

    Each batch is fed as ``x.float() / 255`` (the model holds its own mean/std normalisation),
    in eval mode under ``torch.inference_mode``, optionally in channels-last memory format (the
    input only; a no-op for 1-channel images). ``normalize`` re-applies L2 normalisation (models
    already return unit vectors; this guards exported or foreign models). ``device=None`` runs on
    the model's device; another device runs a moved copy, so the caller's model is never moved,
    and its train/eval mode is restored. Same inputs give bit-identical outputs on CPU.
    """
    images = _as_uint8_images(images_uint8)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    runner = on_device(model, device)
    run_device = model_device(runner)
    starts = range(0, len(images), batch_size)
    if progress:
        from rich.progress import track

        starts = track(starts, description="embedding", total=len(starts), disable=not is_terminal(sys.stdout))
    outputs: list[torch.Tensor] = []
    with eval_mode(runner), torch.inference_mode():
        for start in starts:
            x = images[start : start + batch_size].to(run_device, non_blocking=True).float() / 255
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = runner(x).float()
            if normalize:
                out = torch.nn.functional.normalize(out, dim=1)
            outputs.append(out.cpu())
    if not outputs:
        with eval_mode(runner), torch.inference_mode():
            dim = runner(torch.zeros((1, *images.shape[1:]), device=run_device)).shape[1]
        return np.zeros((0, dim), dtype=np.float32)
    return torch.cat(outputs).numpy().astype(np.float32, copy=False)
