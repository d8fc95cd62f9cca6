"""The training loss as one `nn.Module`: the task loss plus λ · the compatibility term(s).

    loss = task loss (`TASK_LOSSES`: label-smoothed cross-entropy through the model's own classifier,
           or none)
         + compat.weight · compatibility term (BCT, L2, contrastive, ...; hetsearch.compat)

The module owns its losses and their state, the trainer runs the loop (`hetsearch.train.trainer`):
- parameters of the loss module that require a gradient (a term's learnable temperature, say) are
  handed to the optimiser together with the model's;
- its training state (those parameters and the terms' buffers, e.g. a queue) is saved in
  `checkpoint_last.pt` and restored on `--resume` (`checkpoint_state`), so that a resumed run
  continues exactly as an uninterrupted one. Frozen copies of the gallery side are rebuilt from
  the gallery checkpoint instead (`CompatibilityTerm.frozen_submodules`).

The model's classifier belongs to the model (it is saved in `model.pt`): the task loss is given
the model at each call rather than holding it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hetsearch.compat import build_compat_term
from hetsearch.compat.base import (BatchRefs, apply_term, load_training_state, prepare_batch, term_classes,
                                   training_state)
from hetsearch.errors import CheckpointError, ConfigError
from hetsearch.registries import TASK_LOSSES


# train.task_loss -> the task loss class (an nn.Module with `uses_labels` and `build(train_cfg)`)


@TASK_LOSSES.register("classification")
class ClassificationLoss(nn.Module):
    """Label-smoothed cross-entropy of the model's own (margin) classifier on its embeddings."""

    uses_labels = True

    def __init__(self, label_smoothing: float):
        super().__init__()
        self.label_smoothing = label_smoothing

    @classmethod
    def build(cls, train_cfg) -> "ClassificationLoss":
        return cls(train_cfg.label_smoothing)

    def forward(self, model: nn.Module, embeddings: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model.classifier(model.classifier_input(embeddings).float(), labels)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing), logits


@TASK_LOSSES.register("none")
class NoTaskLoss(nn.Module):
    """Label-free training: the compatibility term alone (it needs a compatibility method)."""

    uses_labels = False

    @classmethod
    def build(cls, train_cfg) -> "NoTaskLoss":
        return cls()

    def forward(self, model: nn.Module, embeddings: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, None]:
        return embeddings.new_zeros((), dtype=torch.float32), None


def build_task_loss(train_cfg) -> nn.Module:
    return TASK_LOSSES[train_cfg.task_loss].build(train_cfg)


@dataclass
class LossOutput:
    """One step's losses: `loss` is back-propagated, the rest is logged."""

    loss: torch.Tensor
    task: torch.Tensor                       # 0 without a task loss
    compat: torch.Tensor | None              # the unweighted compatibility term (None: independent training)
    logits: torch.Tensor | None              # the task classifier's logits (train accuracy)
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # composite terms: each part, unweighted


class TrainingLoss(nn.Module):
    """task loss + weight · compatibility term, with the state the trainer optimises and checkpoints."""

    def __init__(self, task: nn.Module, compat: nn.Module | None = None, weight: float = 1.0):
        super().__init__()
        self.task = task
        self.compat = compat
        self.weight = weight

    @property
    def gallery_model_id(self) -> str | None:
        """The gallery model the query model is trained to be compatible with (None: independent)."""
        return self.compat.gallery_model_id if self.compat is not None else None

    @property
    def uses_labels(self) -> bool:
        return self.task.uses_labels

    def prepare_batch(self, images_uint8: torch.Tensor, indices: torch.Tensor, augment, generator: torch.Generator,
                      seed: int) -> tuple[torch.Tensor, BatchRefs | None]:
        """The uint8 batch the model sees (augmented, or the bank's stored views) and the term's refs."""
        return prepare_batch(self.compat, images_uint8, indices, augment, generator, seed=seed)

    def forward(self, model: nn.Module, embeddings: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                refs: BatchRefs | None = None) -> LossOutput:
        """Losses of one batch: `embeddings` are the (possibly DDP-wrapped) model's unnormalised
        outputs for `images`; `model` is the plain model (its classifier)."""
        task_loss, logits = self.task(model, embeddings, labels)
        if self.compat is None:
            return LossOutput(task_loss, task_loss, None, logits)
        compat_loss = apply_term(self.compat, embeddings.float(), images, labels, refs)
        parts = dict(self.compat.last_parts)  # composite methods (bct+l2)
        return LossOutput(task_loss + self.weight * compat_loss, task_loss, compat_loss, logits, parts)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """What training changes in the losses (parameters, buffers; no frozen gallery copies)."""
        return training_state(self)

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: Path) -> None:
        try:
            load_training_state(self, state)
        except (ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{source}: cannot resume, its saved loss state does not fit this run's "
                                  f"compatibility term ({exc}); move it away to start the run over") from None


def build_training_loss(cfg, *, model_spec, splits, run_dir: Path | None, device: torch.device) -> TrainingLoss:
    """The loss module of a training run (`cfg`: a TrainRunConfig); builds the compatibility term."""
    task = build_task_loss(cfg.train)
    compat = build_compat_term(cfg.compat, model_spec=model_spec, classes=splits.classes, train_set=splits.train,
                               run_dir=run_dir, device=device, augment=cfg.train.augment)
    if compat is None and not task.uses_labels:
        raise label_free_without_term()
    return TrainingLoss(task, compat, cfg.compat.weight)


def label_free_without_term() -> ConfigError:
    return ConfigError("train.task_loss=none (label-free) needs a compatibility method to train with, "
                       "e.g. compat.method=contrastive compat.gallery_model=<gallery model.pt>")


def needs_labels(cfg) -> bool:
    """Whether a run (`cfg`: a TrainRunConfig) trains on class labels: its task loss, or a
    compatibility term that declares `needs_labels` (read from the classes, nothing is built)."""
    return TASK_LOSSES[cfg.train.task_loss].uses_labels or \
        any(cls.needs_labels for cls in term_classes(cfg.compat.method).values())
