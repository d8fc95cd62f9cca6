"""One trainer for every embedding model: gallery models, query models and compatibility baselines.

The trainer runs the loop; the pieces live in their own modules:
- the loss module (`hetsearch.train.loss.TrainingLoss`, an `nn.Module`): label-smoothed
  cross-entropy through the model's own cosine classifier + λ · compatibility term (BCT, L2,
  contrastive, ...; see hetsearch.compat), if configured. Its trainable parameters are optimised
  with the model's, its state is checkpointed;
- one epoch (`hetsearch.train.epoch`): seeded batch order, forward, loss, backward, step;
- `checkpoint_last.pt` (`hetsearch.train.resume`): everything needed to continue, written
  atomically after every epoch; `fit(resume=True)` continues from it and ends with the same weights
  as an uninterrupted run (the batch order of epoch e depends only on the seed and e);
- validation (`hetsearch.train.validation`) and progress output (`hetsearch.train.progress`).
Runs unchanged under `torchrun` (DDP; rank 0 writes).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from hetsearch.config import TrainRunConfig
from hetsearch.data import Splits, make_splits
from hetsearch.data.augment import BatchAugment
from hetsearch.data.loader import training_images
from hetsearch.errors import ConfigError
from hetsearch.models import EmbeddingModel, ModelMeta, load_checkpoint, save_checkpoint
from hetsearch.models.embedding_model import create_model_from_config
from hetsearch.models.memory_format import to_channels_last
from hetsearch.train.bn_recalibration import recalibrate_batchnorm
from hetsearch.train.distributed import DistContext, barrier, init_distributed
from hetsearch.train.embedding_map import apply_linear_map, training_map_targets
from hetsearch.train.epoch import EpochSetup, epoch_seed, train_epoch
from hetsearch.train.checks import check_run_config
from hetsearch.train.loss import TrainingLoss, build_training_loss, needs_labels
from hetsearch.train.progress import EpochBar, epoch_line
from hetsearch.train.resume import CHECKPOINT_LAST, RunProgress, resume_from, save_last
from hetsearch.train.schedule import build_optimizer, warmup_cosine
from hetsearch.train.validation import EpochValidator
from hetsearch.utils.device import resolve_device, seed_everything
from hetsearch.utils.io import append_jsonl, atomic_write_json, atomic_write_text
from hetsearch.utils.typed_config import dump_yaml, to_dict

FINAL_MODEL = "model.pt"


@dataclass
class TrainResult:
    model_path: Path
    meta: ModelMeta
    train_seconds: float
    history: list[dict]


class Trainer:
    def __init__(self, cfg: TrainRunConfig, splits: Splits | None = None):
        self.cfg = cfg
        check_run_config(cfg)  # the whole config, before any data is read
        self.device = resolve_device(cfg.runtime.device)
        if cfg.runtime.num_threads:
            torch.set_num_threads(cfg.runtime.num_threads)
        self.dist: DistContext = init_distributed(self.device)
        self.run_dir = cfg.run_dir
        self.splits = splits if splits is not None else make_splits(cfg.data)
        if self.splits.protocol.get("protocol") == "unlabelled" and needs_labels(cfg):
            raise ConfigError(f"data.root={cfg.data.root}: unlabelled images (layout ROOT/*) have no classes to train "
                              f"a classifier on (train.task_loss={cfg.train.task_loss}, compat.method="
                              f"{cfg.compat.method}); use ROOT/CLASS/* folders, or label-free training "
                              "(train.task_loss=none with a gallery-aware compatibility method)")
        per_rank = len(self.splits.train) // self.dist.world_size
        if 1 < per_rank < cfg.train.batch_size:  # a small catalogue: one batch per epoch, not an error
            if self.dist.is_main:
                print(f"[{cfg.name}] train.batch_size={cfg.train.batch_size} is larger than the training split "
                      f"({per_rank} images per process): training with batches of {per_rank}", flush=True)
            cfg.train.batch_size = per_rank
        self.validator = EpochValidator(self.splits.val, cfg.compat, self.device, announce=self.dist.is_main)

    # ------------------------------------------------------------------ building blocks
    def _build_model(self) -> EmbeddingModel:
        model = create_model_from_config(self.cfg.model, self.cfg.data, num_classes=len(self.splits.classes))
        model.to(self.device)
        if self.cfg.runtime.channels_last:
            to_channels_last(model)
        return model

    def _build_loss(self, model: EmbeddingModel) -> TrainingLoss:
        return build_training_loss(self.cfg, model_spec=model.spec, splits=self.splits, run_dir=self.run_dir,
                                   device=self.device)

    def _steps_per_epoch(self) -> int:
        per_rank = len(self.splits.train) // self.dist.world_size
        steps = per_rank // self.cfg.train.batch_size
        if steps == 0:
            raise ConfigError(f"train.batch_size={self.cfg.train.batch_size} is larger than the training "
                              f"split per process ({per_rank} images)")
        cap = self.cfg.train.max_steps_per_epoch
        return min(steps, cap) if cap else steps

    def _epoch_setup(self) -> EpochSetup:
        cfg = self.cfg
        return EpochSetup(device=self.device, dist=self.dist, seed=cfg.runtime.seed, batch_size=cfg.train.batch_size,
                          steps=self._steps_per_epoch(), amp=cfg.runtime.amp, channels_last=cfg.runtime.channels_last)

    def _augment(self) -> BatchAugment:
        aug = self.cfg.train.augment
        return BatchAugment(crop_padding=aug.crop_padding, hflip=aug.hflip, erase_prob=aug.erase_prob,
                            erase_area=tuple(aug.erase_area), **aug.photo_options())

    # ------------------------------------------------------------------ main loop
    def fit(self, resume: bool = False) -> TrainResult:
        cfg, run_dir = self.cfg, self.run_dir
        final_path, last_path = run_dir / FINAL_MODEL, run_dir / CHECKPOINT_LAST
        if last_path.exists() and not resume:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, "
                              "or choose another name (name=...)")
        if resume and final_path.exists() and not last_path.exists():
            # a finished run kept without its checkpoint (bench/state.py, a copied run folder): reuse it,
            # never train over the model that its results were computed with
            return self._with_linear_map(finished_run(run_dir, cfg))
        seed_everything(cfg.runtime.seed + self.dist.rank)
        model = self._build_model()
        loss = self._build_loss(model)
        optimizer = build_optimizer([model, loss], cfg.train)
        setup = self._epoch_setup()
        scheduler = warmup_cosine(optimizer, setup.steps * cfg.train.epochs,
                                  round(cfg.train.warmup_epochs * setup.steps))
        progress = RunProgress()
        if resume and last_path.exists():
            progress = resume_from(last_path, cfg, model=model, loss=loss, optimizer=optimizer, scheduler=scheduler)
        if resume and final_path.exists() and progress.next_epoch >= cfg.train.epochs:
            done = TrainResult(final_path, load_checkpoint(final_path).meta, progress.train_seconds, progress.history)
            return self._with_linear_map(done)  # (a run stopped before its map gets it now)
        if self.dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        self._run_epochs(setup, progress, model=model, loss=loss, optimizer=optimizer, scheduler=scheduler)
        return self._with_linear_map(self._finish(model, loss, progress))

    def _run_epochs(self, setup: EpochSetup, progress: RunProgress, *, model, loss, optimizer, scheduler) -> None:
        cfg = self.cfg
        train_model = DistributedDataParallel(model) if self.dist.enabled else model
        augment = self._augment()
        # a device tensor, or the training split streamed from disk (data.storage; hetsearch.data.loader)
        images, labels = training_images(self.splits.train, self.device, cfg.data.num_workers)
        for epoch in range(progress.next_epoch, cfg.train.epochs):
            epoch_start = time.perf_counter()
            stats = self._train_epoch(setup, epoch, train_model=train_model, model=model, loss=loss,
                                      optimizer=optimizer, scheduler=scheduler, augment=augment, images=images,
                                      labels=labels, progress=self._epoch_bar(epoch, setup.steps))
            if cfg.train.bn_recalibration_batches:
                recalibrate_batchnorm(model, images, batches=cfg.train.bn_recalibration_batches,
                                      batch_size=cfg.train.batch_size, seed=epoch_seed(cfg.runtime.seed, epoch),
                                      augment=augment)
            epoch_seconds = time.perf_counter() - epoch_start
            progress.train_seconds += epoch_seconds
            record = {"epoch": epoch + 1, **stats, "epoch_seconds": round(epoch_seconds, 2),
                      "images_per_second": round(stats["images"] / epoch_seconds, 1)}
            if self.dist.is_main and self._validates_after(epoch):
                record.update(self.validate(model))
            progress.history.append(record)
            if self.dist.is_main:
                append_jsonl(self.run_dir / "metrics.jsonl", record)
                save_last(self.run_dir / CHECKPOINT_LAST, epoch=epoch, model=model, loss=loss, optimizer=optimizer,
                          scheduler=scheduler, cfg=cfg, progress=progress)
                if cfg.runtime.progress:
                    print(epoch_line(cfg.name, cfg.train.epochs, record), flush=True)
            barrier(self.dist)

    def validate(self, model: EmbeddingModel) -> dict:
        """Homogeneous retrieval and M(q, g) on the validation split (`EpochValidator`)."""
        return self.validator(model)

    def _train_epoch(self, setup: EpochSetup, epoch: int, **parts) -> dict:
        """One epoch (a method, so that tests can interrupt a run between epochs)."""
        return train_epoch(setup, epoch, **parts)

    def _validates_after(self, epoch: int) -> bool:
        every, epochs = self.cfg.runtime.eval_every, self.cfg.train.epochs
        return bool(every) and ((epoch + 1) % every == 0 or epoch + 1 == epochs)

    def _epoch_bar(self, epoch: int, steps: int) -> EpochBar | None:
        if not (self.cfg.runtime.progress and self.dist.is_main):
            return None
        return EpochBar(self.cfg.name, epoch, self.cfg.train.epochs, steps,
                        self.cfg.train.batch_size * self.dist.world_size)

    def _finish(self, model: EmbeddingModel, loss: TrainingLoss, progress: RunProgress) -> TrainResult:
        """Rank 0 writes `model.pt` (weights and metadata) and `summary.json`."""
        cfg, final_path, meta = self.cfg, self.run_dir / FINAL_MODEL, None
        seconds = round(progress.train_seconds, 2)
        if self.dist.is_main:
            meta = save_checkpoint(final_path, model.cpu(), classes=self.splits.classes,
                                   compatible_with=loss.gallery_model_id, compatibility=cfg.compat.method,
                                   config=to_dict(cfg), extra={"train_seconds": seconds,
                                                               "protocol": self.splits.protocol})
            atomic_write_json(self.run_dir / "summary.json", {
                "model_id": meta.model_id, "model_path": str(final_path), "train_seconds": seconds,
                "flops": meta.flops, "params": meta.params, "final": progress.history[-1] if progress.history else {}})
        barrier(self.dist)
        return TrainResult(final_path, meta, progress.train_seconds, progress.history)


    def _with_linear_map(self, result: TrainResult) -> TrainResult:
        """compat.linear_map: the saved model followed by the map onto the gallery's embeddings of the
        training images (hetsearch.train.embedding_map; rank 0, once: a mapped model records it)."""
        if self.cfg.compat.linear_map and self.dist.is_main and "linear_map" not in result.meta.extra:
            gallery = load_checkpoint(self.cfg.compat.gallery_model).model.to(self.device)
            info = apply_linear_map(result.model_path, training_map_targets(self.splits.train, gallery,
                                                                            self.cfg.runtime.seed), self.device)
            if self.cfg.runtime.progress:
                print(f"[{self.cfg.name}] linear map: {'kept' if info.get('applied') else 'not kept'} (held-out "
                      f"training images, Recall@1 {info.get('val_recall_at_1_before')} -> "
                      f"{info.get('val_recall_at_1_after')})", flush=True)
            result = TrainResult(result.model_path, load_checkpoint(result.model_path).meta, result.train_seconds,
                                 result.history)
        barrier(self.dist)
        return result


def finished_run(run_dir: Path, cfg: TrainRunConfig) -> TrainResult:
    """The result of a finished run from its model.pt (and metrics.jsonl, when kept); refused with one
    line when the model was trained for another number of epochs than `cfg` asks for."""
    final_path = run_dir / FINAL_MODEL
    meta = load_checkpoint(final_path).meta
    epochs = meta.config.get("train", {}).get("epochs")
    if epochs != cfg.train.epochs:
        raise ConfigError(f"{final_path}: a finished model trained for {epochs} epochs, without the "
                          f"{CHECKPOINT_LAST} to continue it to train.epochs={cfg.train.epochs}; choose another name "
                          "(name=...) or remove the folder")
    metrics = run_dir / "metrics.jsonl"
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    return TrainResult(final_path, meta, float(meta.extra.get("train_seconds", 0.0)), history)


def train(cfg: TrainRunConfig, resume: bool = False, splits: Splits | None = None) -> TrainResult:
    return Trainer(cfg, splits=splits).fit(resume=resume)
