"""One trainer for every embedding model: gallery models, query models and compatibility baselines.

Loss = label-smoothed cross-entropy through the model's own cosine classifier
     + λ · compatibility term (BCT, L2, distillation, ...; see hetsearch.compat), if configured.

Everything needed to continue is checkpointed atomically after every epoch
(`checkpoint_last.pt`); `fit(resume=True)` continues from it and ends with the same weights as an
uninterrupted run (the batch order of epoch e depends only on the seed and e). Runs unchanged
under `torchrun` (DDP; rank 0 writes).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from hetsearch.compat import build_compat_term
from hetsearch.compat.base import apply_term, prepare_batch
from hetsearch.config import TrainRunConfig, dump_yaml, from_dict, to_dict
from hetsearch.data import BatchAugment, Splits, iterate_batches, make_splits
from hetsearch.data.loader import training_images
from hetsearch.errors import CheckpointError, ConfigError
from hetsearch.models import EmbeddingModel, ModelMeta, create_model, save_checkpoint
from hetsearch.models.memory_format import to_channels_last
from hetsearch.train.distributed import DistContext, all_reduce_mean, barrier, init_distributed
from hetsearch.train.bn_recalibration import recalibrate_batchnorm
from hetsearch.train.schedule import build_optimizer, warmup_cosine
from hetsearch.utils.device import resolve_device, seed_everything
from hetsearch.utils.io import append_jsonl, atomic_torch_save, atomic_write_json, atomic_write_text

CHECKPOINT_LAST = "checkpoint_last.pt"
TASK_LOSSES = ("classification", "none")
FINAL_MODEL = "model.pt"


@dataclass
class TrainResult:
    model_path: Path
    meta: ModelMeta
    train_seconds: float
    history: list[dict]


def _autocast(device: torch.device, amp: str):
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    def __init__(self, cfg: TrainRunConfig, splits: Splits | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.runtime.device)
        if cfg.runtime.num_threads:
            torch.set_num_threads(cfg.runtime.num_threads)
        self.dist: DistContext = init_distributed(self.device)
        self.run_dir = cfg.run_dir
        self.splits = splits if splits is not None else make_splits(cfg.data)
        if self.splits.protocol.get("protocol") == "unlabelled" and \
                getattr(cfg.train, "task_loss", "classification") == "classification":
            raise ConfigError(f"data.root={cfg.data.root}: unlabelled images (layout ROOT/*) have no classes to train "
                              "a classifier on; use ROOT/CLASS/* folders, or label-free training "
                              "(train.task_loss=none with a gallery-aware compatibility method)")
        per_rank = len(self.splits.train) // self.dist.world_size
        if 1 < per_rank < cfg.train.batch_size:  # a small catalogue: one batch per epoch, not an error
            if self.dist.is_main:
                print(f"[{cfg.name}] train.batch_size={cfg.train.batch_size} is larger than the training split "
                      f"({per_rank} images per process): training with batches of {per_rank}", flush=True)
            cfg.train.batch_size = per_rank
        if cfg.runtime.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"runtime.amp: got {cfg.runtime.amp!r}, expected auto, off, bf16 or fp16")

    # ------------------------------------------------------------------ building blocks
    def _build_model(self) -> EmbeddingModel:
        m = self.cfg.model
        model = create_model(m.backbone, num_classes=len(self.splits.classes), embedding_dim=m.embedding_dim,
                             head=m.head, head_scale=m.head_scale, head_margin=m.head_margin,
                             in_chans=self.cfg.data.channels, image_size=self.cfg.data.image_size,
                             backbone_args=m.backbone_args, embedding_layer=m.embedding_layer,
                             projection_dim=m.projection_dim, mean=m.mean, std=m.std,
                             pretrained_file=m.pretrained_file)
        model.to(self.device)
        if self.cfg.runtime.channels_last:
            to_channels_last(model)
        return model

    def _steps_per_epoch(self) -> int:
        per_rank = len(self.splits.train) // self.dist.world_size
        steps = per_rank // self.cfg.train.batch_size
        if steps == 0:
            raise ConfigError(f"train.batch_size={self.cfg.train.batch_size} is larger than the training "
                              f"split per process ({per_rank} images)")
        cap = self.cfg.train.max_steps_per_epoch
        return min(steps, cap) if cap else steps

    def _check_resumable(self, saved_config: dict) -> None:
        current = to_dict(self.cfg)
        try:
            # fields added after the run started take their defaults (which keep the old behaviour)
            saved = to_dict(from_dict(TrainRunConfig, dict(saved_config)))
        except ConfigError as exc:
            raise ConfigError(f"{self.run_dir / CHECKPOINT_LAST}: cannot resume, its saved config is "
                              f"not valid for this version: {exc}") from exc
        # runtime settings (device, progress, threads) may change between attempts; the rest may not
        current.pop("runtime"), saved.pop("runtime", None)
        if current != saved:
            changed = sorted(k for k in set(current) | set(saved) if current.get(k) != saved.get(k))
            raise ConfigError(f"{self.run_dir / CHECKPOINT_LAST}: cannot resume, the config differs in "
                              f"section(s) {', '.join(changed)}; use the saved {self.run_dir / 'config.yaml'} "
                              "or a new run name")

    # ------------------------------------------------------------------ main loop
    def fit(self, resume: bool = False) -> TrainResult:
        cfg, run_dir = self.cfg, self.run_dir
        final_path = run_dir / FINAL_MODEL
        last_path = run_dir / CHECKPOINT_LAST
        if last_path.exists() and not resume:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, "
                              "or choose another name (name=...)")
        seed_everything(cfg.runtime.seed + self.dist.rank)
        model = self._build_model()
        if cfg.train.task_loss not in TASK_LOSSES:
            raise ConfigError(f"train.task_loss: got {cfg.train.task_loss!r}, expected one of {', '.join(TASK_LOSSES)}")
        compat_term = build_compat_term(cfg.compat, model_spec=model.spec, classes=self.splits.classes,
                                        train_set=self.splits.train, run_dir=run_dir, device=self.device,
                                        augment=cfg.train.augment)
        if compat_term is None and cfg.train.task_loss == "none":
            raise ConfigError("train.task_loss=none (label-free) needs a compatibility method to train with, "
                              "e.g. compat.method=contrastive compat.gallery_model=<gallery model.pt>")
        optimizer = build_optimizer(model, cfg.train)
        steps_per_epoch = self._steps_per_epoch()
        total_steps = steps_per_epoch * cfg.train.epochs
        scheduler = warmup_cosine(optimizer, total_steps, round(cfg.train.warmup_epochs * steps_per_epoch))
        start_epoch, train_seconds, history = 0, 0.0, []

        if resume and last_path.exists():
            try:  # weights_only: a crafted file cannot run code; a damaged or foreign one is one clear line
                state = torch.load(last_path, map_location="cpu", weights_only=True)
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise CheckpointError(f"{last_path}: cannot resume from it, not a readable training checkpoint "
                                      f"({type(exc).__name__}: {reason}); move it away to start the run over") from None
            needed = ("config", "model", "optimizer", "scheduler", "epoch", "train_seconds", "history", "torch_rng")
            if not isinstance(state, dict) or any(key not in state for key in needed):
                raise CheckpointError(f"{last_path}: cannot resume from it, not a hetsearch training checkpoint "
                                      f"(expected the keys {', '.join(needed)}); move it away to start the run over")
            self._check_resumable(state["config"])
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, train_seconds, history = state["epoch"] + 1, state["train_seconds"], state["history"]
            torch.set_rng_state(state["torch_rng"])
        if resume and final_path.exists() and start_epoch >= cfg.train.epochs:
            from hetsearch.models import load_checkpoint
            loaded = load_checkpoint(final_path)
            return TrainResult(final_path, loaded.meta, train_seconds, history)

        if self.dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        train_model = DistributedDataParallel(model) if self.dist.enabled else model
        aug = cfg.train.augment
        augment = BatchAugment(crop_padding=aug.crop_padding, hflip=aug.hflip,
                               erase_prob=aug.erase_prob, erase_area=tuple(aug.erase_area))
        # a device tensor, or the training split streamed from disk (data.storage; hetsearch.data.loader)
        images, labels = training_images(self.splits.train, self.device, cfg.data.num_workers)

        for epoch in range(start_epoch, cfg.train.epochs):
            epoch_start = time.perf_counter()
            stats = self._train_epoch(train_model, model, compat_term, optimizer, scheduler, augment,
                                      images, labels, epoch, steps_per_epoch)
            if cfg.train.bn_recalibration_batches:
                recalibrate_batchnorm(model, images, batches=cfg.train.bn_recalibration_batches,
                                      batch_size=cfg.train.batch_size, seed=cfg.runtime.seed * 100_003 + epoch,
                                      augment=augment)
            epoch_seconds = time.perf_counter() - epoch_start
            train_seconds += epoch_seconds
            record = {"epoch": epoch + 1, **stats, "epoch_seconds": round(epoch_seconds, 2),
                      "images_per_second": round(stats["images"] / epoch_seconds, 1)}
            if self.dist.is_main and cfg.runtime.eval_every and ((epoch + 1) % cfg.runtime.eval_every == 0
                                                                 or epoch + 1 == cfg.train.epochs):
                record.update(self.validate(model))
            history.append(record)
            if self.dist.is_main:
                append_jsonl(run_dir / "metrics.jsonl", record)
                atomic_torch_save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "config": to_dict(cfg),
                                   "train_seconds": train_seconds, "history": history,
                                   "torch_rng": torch.get_rng_state()}, last_path)
                self._print_epoch(record)
            barrier(self.dist)

        meta = None
        if self.dist.is_main:
            meta = save_checkpoint(
                final_path, model.cpu(), classes=self.splits.classes,
                compatible_with=compat_term.gallery_model_id if compat_term else None,
                compatibility=cfg.compat.method, config=to_dict(cfg),
                extra={"train_seconds": round(train_seconds, 2), "protocol": self.splits.protocol})
            atomic_write_json(run_dir / "summary.json", {
                "model_id": meta.model_id, "model_path": str(final_path), "train_seconds": round(train_seconds, 2),
                "flops": meta.flops, "params": meta.params, "final": history[-1] if history else {}})
        barrier(self.dist)
        return TrainResult(final_path, meta, train_seconds, history)

    def _train_epoch(self, train_model, model, compat_term, optimizer, scheduler, augment, images, labels,
                     epoch: int, steps_per_epoch: int) -> dict:
        cfg = self.cfg
        model.train()
        # The batch order of epoch e depends only on (seed, e): resuming replays it exactly.
        generator = torch.Generator().manual_seed(cfg.runtime.seed * 100_003 + epoch)
        # batches of item positions (the same permutation as batching the labels): bank terms need them
        batches = iterate_batches(images, torch.arange(len(labels), device=labels.device), cfg.train.batch_size,
                                  generator, shuffle=True, drop_last=True, rank=self.dist.rank,
                                  world_size=self.dist.world_size)
        # per-step sums stay on the device (no host sync per step); read once at the end of the epoch
        zero = lambda: torch.zeros((), dtype=torch.float64, device=self.device)  # noqa: E731
        totals = {"loss": zero(), "cls_loss": zero(), "compat_loss": zero(), "correct": zero(), "images": 0}
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        progress = self._progress(epoch, steps_per_epoch)
        with_task = cfg.train.task_loss == "classification"
        for step, (batch_images, batch_index) in enumerate(batches):
            if step >= steps_per_epoch:
                break
            batch_labels = labels[batch_index]
            x, refs = prepare_batch(compat_term, batch_images, batch_index, augment, generator,
                                    seed=(cfg.runtime.seed * 100_003 + epoch) * 1_000_003 + step)
            x = x.float().div_(255)
            if cfg.runtime.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(self.device, cfg.runtime.amp):
                # through the (possibly DDP-wrapped) forward, so DDP sees the computation
                embeddings = train_model(x, normalize=False)
                if with_task:
                    logits = model.classifier(model.classifier_input(embeddings).float(), batch_labels)
                    cls_loss = F.cross_entropy(logits, batch_labels, label_smoothing=cfg.train.label_smoothing)
                else:  # label-free: the compatibility term alone
                    logits, cls_loss = None, embeddings.new_zeros((), dtype=torch.float32)
                compat_loss = apply_term(compat_term, embeddings.float(), x, batch_labels, refs) if compat_term else None
                loss = cls_loss + cfg.compat.weight * compat_loss if compat_loss is not None else cls_loss
            finite &= torch.isfinite(loss.detach())
            if progress is not None and not bool(finite):  # the progress bar syncs anyway: fail at once
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                                         "lower train.lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = batch_labels.numel()
            totals["loss"] += loss.detach() * n
            totals["cls_loss"] += cls_loss.detach() * n
            if compat_loss is not None:
                totals["compat_loss"] += compat_loss.detach() * n
            for part, value in getattr(compat_term, "last_parts", {}).items():  # composite methods (bct+l2)
                key = f"compat_{part}_loss"
                totals[key] = totals.get(key, zero()) + value * n
            if logits is not None:
                totals["correct"] += (logits.detach().argmax(1) == batch_labels).sum()
            totals["images"] += n
            if progress is not None:
                progress.update(1, loss=totals["loss"].item() / totals["images"])
        if progress is not None:
            progress.close()
        if not bool(finite):
            raise FloatingPointError(f"loss became non-finite during epoch {epoch + 1}; lower train.lr or check the data")
        totals = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in totals.items()}
        n = max(1, totals["images"])
        out = {"loss": totals["loss"] / n, "cls_loss": totals["cls_loss"] / n,
               "train_accuracy": totals["correct"] / n if with_task else None, "lr": scheduler.get_last_lr()[0],
               "images": totals["images"] * self.dist.world_size}
        if compat_term is not None:
            out.update({k: v / n for k, v in totals.items() if k.startswith("compat_")})
        averaged = {"loss", "cls_loss", "train_accuracy"} | {k for k in out if k.startswith("compat_")}
        return {k: (all_reduce_mean(v, self.dist) if k in averaged and v is not None else v) for k, v in out.items()}

    def validate(self, model: EmbeddingModel) -> dict:
        """Homogeneous retrieval on the validation split (each item queries the others)."""
        from hetsearch.eval import embed, retrieval_metrics

        from hetsearch.data.splits import scorable

        val = self.splits.val
        if len(val) < 2 or not scorable(val.labels):  # no class with two images: nothing to retrieve
            return {}
        emb = embed(model, val.images, device=self.device)
        metrics = retrieval_metrics(emb, val.labels.numpy(), emb, val.labels.numpy(), ks=(1,), exclude_self=True)
        out = {"val_recall_at_1": metrics["recall_at_1"], "val_map_at_r": metrics["map_at_r"]}
        out.update(self._validate_against_gallery(emb))
        return out

    def _validate_against_gallery(self, query_emb) -> dict:
        """M(q, g) on the validation split: each item's query embedding searches the gallery model's
        embeddings of the other validation items (labels: Recall@1; label-free: whether the nearest
        gallery embedding of *all* validation items is the item's own). Needs compat.gallery_model."""
        from hetsearch.compat.validation import gallery_val_embeddings, hetero_val_metrics

        if not self.cfg.compat.gallery_model:
            return {}
        if self.cfg.compat.method == "none" and not Path(self.cfg.compat.gallery_model).is_file():
            # an independent model only monitors M(q, g): a missing gallery is no reason to stop
            if not getattr(self, "_warned_no_gallery", False) and self.dist.is_main:
                print(f"warning: compat.gallery_model={self.cfg.compat.gallery_model} does not exist: "
                      "no per-epoch M(q, g) for this independent model", flush=True)
            self._warned_no_gallery = True
            return {}
        if getattr(self, "_val_gallery_emb", None) is None:
            self._val_gallery_emb = gallery_val_embeddings(self.cfg.compat.gallery_model, self.splits.val,
                                                           query_emb.shape[1], self.device)
        return hetero_val_metrics(query_emb, self._val_gallery_emb, self.splits.val.labels.numpy())

    # ------------------------------------------------------------------ reporting
    def _progress(self, epoch: int, steps: int):
        if not (self.cfg.runtime.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"{self.cfg.name} epoch {epoch + 1}/{self.cfg.train.epochs}",
                   unit="batch", leave=False, dynamic_ncols=True)
        batch = self.cfg.train.batch_size * self.dist.world_size

        class _Bar:
            def update(self, n, loss):
                bar.update(n)
                rate = bar.format_dict.get("rate") or 0.0
                bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate * batch:.0f}", refresh=False)

            def close(self):
                bar.close()

        return _Bar()

    def _print_epoch(self, record: dict) -> None:
        if not self.cfg.runtime.progress:
            return
        parts = [f"epoch {record['epoch']}/{self.cfg.train.epochs}", f"loss {record['loss']:.4f}",
                 f"{record['images_per_second']:.0f} img/s"]
        if record.get("train_accuracy") is not None:
            parts.insert(2, f"train acc {record['train_accuracy']:.4f}")
        if "val_recall_at_1" in record:
            parts.append(f"val R@1 {record['val_recall_at_1']:.4f}")
        if "val_hetero_recall_at_1" in record:
            parts.append(f"val M(q,g) R@1 {record['val_hetero_recall_at_1']:.4f}")
        print(f"[{self.cfg.name}] " + ", ".join(parts), flush=True)


def train(cfg: TrainRunConfig, resume: bool = False, splits: Splits | None = None) -> TrainResult:
    return Trainer(cfg, splits=splits).fit(resume=resume)
