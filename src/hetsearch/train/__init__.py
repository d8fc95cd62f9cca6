"""Training: the loop (`trainer`), the loss module (`loss`), one epoch (`epoch`), checkpoint and
resume (`resume`), validation and progress output; see docs/architecture.md, "Training loop"."""

from hetsearch.train.loss import TrainingLoss, build_training_loss
from hetsearch.train.resume import CHECKPOINT_LAST
from hetsearch.train.trainer import FINAL_MODEL, Trainer, TrainResult, train

__all__ = ["Trainer", "TrainResult", "train", "CHECKPOINT_LAST", "FINAL_MODEL", "TrainingLoss", "build_training_loss"]
