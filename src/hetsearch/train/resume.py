"""`checkpoint_last.pt`: everything a run needs to continue, written atomically after every epoch.

Keys: `epoch` (the last finished one, 0-based), `model`, `loss` (the loss module's training state:
a compatibility term's learnable parameters and buffers; `TrainingLoss.checkpoint_state`),
`optimizer`, `scheduler`, `config`, `train_seconds`, `history`, `torch_rng`. The batch order of
epoch e depends only on the seed and e, so a run resumed from it ends with the same weights as an
uninterrupted one.

Checkpoints written before the loss module existed have no `loss` key: they resume when the run's
loss has no state to restore (every built-in method), and are refused with one clear line otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from hetsearch.config import TrainRunConfig
from hetsearch.errors import CheckpointError, ConfigError
from hetsearch.utils.io import atomic_torch_save
from hetsearch.utils.typed_config import from_dict, to_dict

CHECKPOINT_LAST = "checkpoint_last.pt"
REQUIRED_KEYS = ("config", "model", "optimizer", "scheduler", "epoch", "train_seconds", "history", "torch_rng")


@dataclass
class RunProgress:
    """Where a run stands: the next epoch to train, the training time so far, the per-epoch records."""

    next_epoch: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def save_last(path: Path, *, epoch: int, model, loss, optimizer, scheduler, cfg: TrainRunConfig,
              progress: RunProgress) -> None:
    atomic_torch_save({"epoch": epoch, "model": model.state_dict(), "loss": loss.checkpoint_state(),
                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "config": to_dict(cfg), "train_seconds": progress.train_seconds,
                       "history": progress.history, "torch_rng": torch.get_rng_state()}, path)


def read_last(path: Path) -> dict:
    """The checkpoint's contents; CheckpointError (one line) for a damaged, foreign or crafted file."""
    try:  # weights_only: a crafted file cannot run code; a damaged or foreign one is one clear line
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot resume from it, not a readable training checkpoint "
                              f"({type(exc).__name__}: {reason}); move it away to start the run over") from None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: cannot resume from it, not a hetsearch training checkpoint "
                              f"(expected the keys {', '.join(REQUIRED_KEYS)}); move it away to start the run over")
    return state


def check_resumable(cfg: TrainRunConfig, saved_config: dict, path: Path) -> None:
    """ConfigError unless the saved run's config equals `cfg` (runtime settings may change)."""
    current = to_dict(cfg)
    try:
        # fields added after the run started take their defaults (which keep the old behaviour)
        saved = to_dict(from_dict(TrainRunConfig, dict(saved_config)))
    except ConfigError as exc:
        raise ConfigError(f"{path}: cannot resume, its saved config is not valid for this version: {exc}") from exc
    # runtime settings (device, progress, threads) may change between attempts; the rest may not
    current.pop("runtime"), saved.pop("runtime", None)
    if current != saved:
        changed = sorted(k for k in set(current) | set(saved) if current.get(k) != saved.get(k))
        raise ConfigError(f"{path}: cannot resume, the config differs in section(s) {', '.join(changed)}; "
                          f"use the saved {path.parent / 'config.yaml'} or a new run name")


def _restore_loss(loss, state: dict, path: Path) -> None:
    if "loss" in state:
        loss.load_checkpoint_state(state["loss"], path)
    elif loss.checkpoint_state():
        raise CheckpointError(f"{path}: cannot resume, it was written before the loss state was checkpointed "
                              f"and this run's compatibility term has state ({', '.join(loss.checkpoint_state())}); "
                              "move it away to start the run over")


def resume_from(path: Path, cfg: TrainRunConfig, *, model, loss, optimizer, scheduler) -> RunProgress:
    """Load `path` into the run's objects (and the global torch RNG); where the run stands."""
    state = read_last(path)
    check_resumable(cfg, state["config"], path)
    model.load_state_dict(state["model"])
    _restore_loss(loss, state, path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return RunProgress(state["epoch"] + 1, state["train_seconds"], state["history"])
