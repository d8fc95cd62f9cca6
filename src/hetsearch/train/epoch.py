"""One training epoch: batches in a seeded order, forward, the loss module, backward, optimiser step.

The batch order of epoch e depends only on (seed, e), so a resumed run replays it exactly. Per-step
sums stay on the device (no host sync per step) and are read once at the end of the epoch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from hetsearch.data import iterate_batches
from hetsearch.train.distributed import DistContext, all_reduce_gradients, all_reduce_mean
from hetsearch.train.loss import LossOutput, TrainingLoss


def autocast(device: torch.device, amp: str):
    """`runtime.amp`: auto (bf16 on CUDA, off elsewhere) | off | bf16 | fp16."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seeds epoch `epoch`'s batch order and augmentation (and its BatchNorm recalibration)."""
    return seed * 100_003 + epoch


@dataclass
class EpochSetup:
    """What every epoch of a run shares."""

    device: torch.device
    dist: DistContext
    seed: int
    batch_size: int
    steps: int                       # steps per epoch (capped by train.max_steps_per_epoch)
    amp: str = "off"
    channels_last: bool = False


class EpochTotals:
    """Sums over an epoch's steps, weighted by batch size, kept on the device."""

    def __init__(self, device: torch.device):
        self._zero = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.sums = {"loss": self._zero(), "cls_loss": self._zero(), "compat_loss": self._zero(),
                     "correct": self._zero(), "images": 0}
        self.finite = torch.ones((), dtype=torch.bool, device=device)

    def add(self, out: LossOutput, labels: torch.Tensor) -> None:
        n, sums = labels.numel(), self.sums
        sums["loss"] += out.loss.detach() * n
        sums["cls_loss"] += out.task.detach() * n
        if out.compat is not None:
            sums["compat_loss"] += out.compat.detach() * n
        for part, value in out.parts.items():  # composite methods (bct+l2)
            key = f"compat_{part}_loss"
            sums[key] = sums.get(key, self._zero()) + value * n
        if out.logits is not None:
            sums["correct"] += (out.logits.detach().argmax(1) == labels).sum()
        sums["images"] += n

    def running_loss(self) -> float:
        return self.sums["loss"].item() / self.sums["images"]

    def summary(self, *, with_task: bool, with_compat: bool, lr: float, dist: DistContext) -> dict:
        """The epoch's means (averaged over the processes) and its image count (all processes)."""
        totals = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in self.sums.items()}
        n = max(1, totals["images"])
        out = {"loss": totals["loss"] / n, "cls_loss": totals["cls_loss"] / n,
               "train_accuracy": totals["correct"] / n if with_task else None, "lr": lr,
               "images": totals["images"] * dist.world_size}
        if with_compat:
            out.update({k: v / n for k, v in totals.items() if k.startswith("compat_")})
        averaged = {"loss", "cls_loss", "train_accuracy"} | {k for k in out if k.startswith("compat_")}
        return {k: (all_reduce_mean(v, dist) if k in averaged and v is not None else v) for k, v in out.items()}


def _float_batch(x: torch.Tensor, setup: EpochSetup) -> torch.Tensor:
    x = x.float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if setup.channels_last else x


def train_epoch(setup: EpochSetup, epoch: int, *, train_model: nn.Module, model: nn.Module, loss: TrainingLoss,
                optimizer, scheduler, augment, images, labels, progress=None) -> dict:
    """Train one epoch; the epoch's statistics (`EpochTotals.summary`). `train_model` is the
    (possibly DDP-wrapped) model; `progress` an `EpochBar` or None."""
    model.train()
    generator = torch.Generator().manual_seed(epoch_seed(setup.seed, epoch))
    # batches of item positions (the same permutation as batching the labels): bank terms need them
    batches = iterate_batches(images, torch.arange(len(labels), device=labels.device), setup.batch_size,
                              generator, shuffle=True, drop_last=True, rank=setup.dist.rank,
                              world_size=setup.dist.world_size)
    totals, extra_params = EpochTotals(setup.device), loss.trainable_parameters()
    for step, (batch_images, batch_index) in enumerate(batches):
        if step >= setup.steps:
            break
        batch_labels = labels[batch_index]
        x, refs = loss.prepare_batch(batch_images, batch_index, augment, generator,
                                     seed=epoch_seed(setup.seed, epoch) * 1_000_003 + step)
        x = _float_batch(x, setup)
        with autocast(setup.device, setup.amp):
            # through the (possibly DDP-wrapped) forward, so DDP sees the computation
            out = loss(model, train_model(x, normalize=False), x, batch_labels, refs)
        totals.finite &= torch.isfinite(out.loss.detach())
        if progress is not None and not bool(totals.finite):  # the progress bar syncs anyway: fail at once
            raise FloatingPointError(f"loss became {out.loss.item()} at epoch {epoch + 1}, step {step}; "
                                     "lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        all_reduce_gradients(extra_params, setup.dist)
        optimizer.step()
        scheduler.step()
        totals.add(out, batch_labels)
        if progress is not None:
            progress.update(1, loss=totals.running_loss())
    if progress is not None:
        progress.close()
    if not bool(totals.finite):
        raise FloatingPointError(f"loss became non-finite during epoch {epoch + 1}; lower train.lr or check the data")
    return totals.summary(with_task=loss.uses_labels, with_compat=loss.compat is not None,
                          lr=scheduler.get_last_lr()[0], dist=setup.dist)
