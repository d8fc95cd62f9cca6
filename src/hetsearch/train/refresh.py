"""Catalogue refresh: fine-tune a query model, label-free, on the items a gallery index holds.

New classes or identities arrive as catalogue images that the gallery model indexes; their queries
come later and were never seen. A query model trained before they existed lands off the gallery's
embeddings of them (docs/compat.md: M(q, g) below M(q, q) on new classes). The index already holds
what is needed to fix that, without a label and without running the gallery model on it: every
item's image as the gallery model saw it and its gallery embedding (`read_stored`). A refresh fine-tunes the query model so that its embedding of each stored image
lands on the stored gallery embedding (the label-free bank methods, `compat.bank.index`), mixed with
a replay of the query model's own training images (their gallery embeddings computed once by the
gallery model, `compat.bank.index_missing=embed`) so the classes it knew are not forgotten.

It is an ordinary training run of `hetsearch.train.Trainer` on prepared splits: per-epoch
checkpoints, `--resume`, progress, validation. The training set is the index's items (minus a
seeded validation share) plus ``replay`` of the query model's training images; validation is the
held-out share of the index (each held-out item's query embedding searches the gallery embeddings
of the other held-out items: M(q, g) on images the refresh never trained on). The refreshed model
keeps the query model's architecture and its contract (`compatible_with` = the index's gallery
model). Run it again after `hetsearch index add`: the new items are in the index, hence in the
refresh (a new run folder per index version, named after it).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hetsearch.config import TrainRunConfig
from hetsearch.data import ImageSet, Splits, make_splits
from hetsearch.data.transforms import fit_tensor_images
from hetsearch.errors import CompatibilityError, ConfigError
from hetsearch.index.gallery import StoredGallery, read_stored
from hetsearch.models import EmbeddingModel, load_checkpoint, save_checkpoint
from hetsearch.models.checkpoint import read_checkpoint_file
from hetsearch.models.memory_format import to_channels_last
from hetsearch.train.embedding_map import MapTargets, apply_linear_map, seeded_permutation, unit
from hetsearch.train.trainer import FINAL_MODEL, Trainer, TrainResult
from hetsearch.utils.io import atomic_write_text
from hetsearch.utils.typed_config import apply_overrides, dump_yaml, from_dict, to_dict

# label-free: the positive is the stored gallery embedding of the very image (InfoNCE against a
# sampled bank) plus the gallery's similarity structure (relational); the best open-set method of
# docs/compat.md and the recipe of the measured refresh (docs/compat.md, "Catalogue refresh")
DEFAULT_METHOD = "contrastive+relational"


@dataclass
class RefreshConfig:
    """`hetsearch refresh`: what to refresh, against which index, and how long."""

    index: str = ""                  # the gallery index folder (its stored images and embeddings)
    query_model: str = ""            # the query model checkpoint to refresh (model.pt)
    gallery_model: Optional[str] = None  # default: the query model's compat.gallery_model
    output_dir: Optional[str] = None     # default: next to the query model (<its folder>/../refresh)
    name: Optional[str] = None           # default: refresh-<query model id>-<index digest>
    epochs: int = 2                  # 0: no fine-tuning, only the linear map (seconds)
    linear: bool = True              # then fit an affine map of the query embedding onto the stored gallery
                                     # embeddings (ridge, λ and whether at all chosen on the held-out items),
                                     # folded into the embedding head (same architecture, same cost)
    lr: float = 0.02                 # SGD, cosine from here, no warm-up (a fine-tune, not a fresh start)
    batch_size: int = 256
    replay: float = 0.5              # share of the training items that are the query model's own images
    val_fraction: float = 0.1        # share of the index held out for validation (at most max_val_items)
    max_val_items: int = 2000
    method: str = DEFAULT_METHOD
    seed: int = 0
    data_root: Optional[str] = None  # where the query model's training data lives now, if it moved
    overrides: dict = field(default_factory=dict)  # further training overrides, e.g. {"runtime.device": "cuda"}

    def validate(self) -> "RefreshConfig":
        if not self.index:
            raise ConfigError("refresh.index: expected the gallery index folder to refresh against (--index DIR)")
        if not self.query_model:
            raise ConfigError("refresh.query_model: expected the query model checkpoint (--query-model PATH)")
        if self.epochs == 0 and not self.linear:
            raise ConfigError("refresh.epochs=0 with refresh.linear=false leaves nothing to do; give epochs >= 1 "
                              "or linear=true")
        for name, value, low_ok in (("epochs", self.epochs, True), ("lr", self.lr, False),
                                    ("batch_size", self.batch_size, False), ("max_val_items", self.max_val_items, True)):
            if not (value > 0 or (low_ok and value == 0)):
                raise ConfigError(f"refresh.{name}: got {value!r}, expected a positive number"
                                  + (" (or 0: only the linear map)" if name == "epochs" else ""))
        if not 0.0 <= self.replay < 1.0:
            raise ConfigError(f"refresh.replay: got {self.replay!r}, expected a share in [0, 1) (0.5: half the "
                              "training items are the query model's own images)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"refresh.val_fraction: got {self.val_fraction!r}, expected a share in [0, 1)")
        return self


def index_digest(stored: StoredGallery) -> str:
    """Identifies the index's content: its item ids and gallery embeddings (changes with `index add`)."""
    digest = hashlib.sha256(np.ascontiguousarray(stored.ids).tobytes())
    digest.update(np.ascontiguousarray(stored.vectors).tobytes())
    return digest.hexdigest()[:12]


def catalogue_sets(stored: StoredGallery, channels: int, image_size: int, *, val_fraction: float,
                   max_val_items: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """(training share, validation share) of the index's items, as the query model sees images.
    Sources are the index's own, so the bank finds each item's stored embedding; labels (where the
    index has them) only score validation."""
    if len(stored.ids) < 2:
        raise ConfigError(f"refresh.index: the index holds {len(stored.ids)} item(s); a refresh needs a catalogue "
                          "(add items with `hetsearch index add`)")
    names = sorted({label for label in stored.labels if label is not None})
    lookup = {name: i for i, name in enumerate(names)}
    labels = torch.tensor([lookup.get(label, -1) if label is not None else -1 for label in stored.labels])
    sources = [s if s is not None else f"index#{int(i)}" for s, i in zip(stored.sources, stored.ids)]
    images = fit_tensor_images(torch.from_numpy(np.array(stored.thumbnails)), channels, image_size)
    items = ImageSet(images=images, labels=labels, classes=names or ["unlabelled"], sources=sources)
    order = seeded_permutation(len(items), seed, "refresh_val")
    n_val = min(int(round(val_fraction * len(items))), max_val_items, len(items) - 1)
    return items.subset(order[n_val:].sort().values), items.subset(order[:n_val].sort().values)


def replay_set(train: ImageSet, count: int, seed: int, classes: list[str]) -> ImageSet:
    """``count`` seeded items of the query model's training split (all of them if it has fewer)."""
    count = min(count, len(train))
    picked = seeded_permutation(len(train), seed, "refresh_replay")[:count].sort().values
    part = train.subset(picked)
    return ImageSet(images=part.images, labels=torch.full((len(part),), -1, dtype=torch.int64), classes=classes,
                    sources=part.sources)


def query_run_config(cfg: RefreshConfig) -> tuple[TrainRunConfig, dict]:
    """The query model's own training config (from its checkpoint) and its metadata."""
    payload = read_checkpoint_file(cfg.query_model)
    meta = payload["meta"]
    saved = (meta.get("config") or {})
    if not saved.get("data"):
        raise ConfigError(f"{cfg.query_model}: the checkpoint records no training config; refresh needs the query "
                          "model's training data for replay (a model.pt written by `hetsearch train`)")
    return from_dict(TrainRunConfig, copy.deepcopy(saved), where=str(cfg.query_model)), meta


def _gallery_model(cfg: RefreshConfig, base: TrainRunConfig, stored: StoredGallery) -> str:
    """The gallery model that built the index (its checkpoint embeds the replay images)."""
    path = cfg.gallery_model or base.compat.gallery_model
    if not path or not Path(path).is_file():
        raise ConfigError(f"refresh.gallery_model: {path or '(none recorded)'}: no such checkpoint; pass the gallery "
                          "model that built the index (--gallery-model PATH/model.pt): it embeds the replayed "
                          "training images once")
    model_id = read_checkpoint_file(path)["meta"]["model_id"]
    if model_id != stored.gallery_model_id:
        raise CompatibilityError(f"refresh.gallery_model: {path} is model {model_id}, but {cfg.index} was built by "
                                 f"{stored.gallery_model_id}; pass the index's own gallery model")
    return str(path)


def training_config(cfg: RefreshConfig, base: TrainRunConfig, *, gallery_model: str, run_name: str,
                    output_dir: str) -> TrainRunConfig:
    """The query model's config turned into the refresh run: label-free, against the index."""
    run = copy.deepcopy(base)
    run.name, run.output_dir = run_name, output_dir
    run.train.epochs, run.train.lr, run.train.batch_size = max(cfg.epochs, 1), cfg.lr, cfg.batch_size
    run.train.warmup_epochs, run.train.task_loss, run.train.max_steps_per_epoch = 0.0, "none", None
    run.compat.method, run.compat.gallery_model = cfg.method, gallery_model
    # the query model's term weights carry over for the terms the refresh's method shares with its training
    # method (e.g. relational=4); a term the refresh does not use has no weight to keep
    parts = {part.strip() for part in cfg.method.split("+")}
    run.compat.term_weights = {k: v for k, v in (run.compat.term_weights or {}).items() if k in parts}
    run.compat.bank.index, run.compat.bank.views, run.compat.bank.match_views = cfg.index, 1, True
    run.compat.bank.index_missing = "embed"
    run.runtime.seed = cfg.seed
    if cfg.data_root:
        run.data.root = cfg.data_root
    if cfg.overrides:
        data = apply_overrides(to_dict(run), [f"{k}={v}" for k, v in cfg.overrides.items()])
        run = from_dict(TrainRunConfig, data)
    run.data.validate()
    run.train.validate()
    return run


class RefreshTrainer(Trainer):
    """The trainer, starting from the query model's weights instead of a fresh network."""

    def __init__(self, cfg: TrainRunConfig, splits: Splits, query_model: str):
        self.query_model = query_model
        super().__init__(cfg, splits=splits)

    def _build_model(self) -> EmbeddingModel:
        model = load_checkpoint(self.query_model).model.to(self.device)
        if self.cfg.runtime.channels_last:
            to_channels_last(model)
        return model


@dataclass
class RefreshResult:
    train: TrainResult
    run_dir: Path
    info: dict


def _as_images(train) -> ImageSet:
    """The training split in memory (a streamed FileSet is decoded: replay takes a share of it)."""
    return train if isinstance(train, ImageSet) else train.materialize()


def refresh_splits(cfg: RefreshConfig, run: TrainRunConfig, stored: StoredGallery,
                   meta: dict) -> tuple[Splits, ImageSet]:
    """Training: the index's items (minus validation) + the replayed share of the query model's
    training images; validation: the held-out share of the index. Also the catalogue's training
    share with its labels (the linear map fits and scores on it)."""
    spec = meta["spec"]
    channels, size = int(spec["in_chans"]), int(spec["image_size"])
    cat_train, cat_val = catalogue_sets(stored, channels, size, val_fraction=cfg.val_fraction,
                                        max_val_items=cfg.max_val_items, seed=cfg.seed)
    classes = list(meta.get("classes") or ["unlabelled"])
    replay_count = int(round(len(cat_train) * cfg.replay / (1.0 - cfg.replay))) if cfg.epochs else 0
    parts = [ImageSet(images=cat_train.images, labels=torch.full((len(cat_train),), -1, dtype=torch.int64),
                      classes=classes, sources=cat_train.sources)]
    if replay_count:
        data = run.data
        own = make_splits(data)
        parts.insert(0, replay_set(_as_images(own.train), replay_count, cfg.seed, classes))
        if tuple(parts[0].images.shape[1:]) != tuple(cat_train.images.shape[1:]):
            raise ConfigError(f"refresh: the query model's training images are {tuple(parts[0].images.shape[1:])}, "
                              f"the model takes {tuple(cat_train.images.shape[1:])}; check data.root / refresh.data_root")
    train = ImageSet(images=torch.cat([p.images for p in parts]), labels=torch.cat([p.labels for p in parts]),
                     classes=classes, sources=[s for p in parts for s in p.sources])
    replayed = len(train) - len(cat_train)
    protocol = {"protocol": "catalogue_refresh", "index": str(cfg.index), "index_items": len(stored.ids),
                "index_digest": index_digest(stored), "catalogue_train": len(cat_train), "val": len(cat_val),
                "replay": replayed, "val_desc": f"{len(cat_val)} held-out index items (seeded, refresh.seed)",
                "counts": {"train": len(train), "val": len(cat_val)}}
    return Splits(train=train, val=cat_val, query=cat_val, gallery=cat_val, classes=classes, train_classes=[],
                  test_classes=[], exclude_self=True, protocol=protocol), cat_train


def refresh(cfg: RefreshConfig, *, resume: bool = False) -> RefreshResult:
    """Fine-tune ``cfg.query_model`` on the catalogue of ``cfg.index`` (see the module doc)."""
    cfg.validate()
    stored = read_stored(cfg.index)
    base, meta = query_run_config(cfg)
    gallery_model = _gallery_model(cfg, base, stored)
    digest = index_digest(stored)
    name = cfg.name or f"refresh-{meta['model_id'][:8]}-{digest[:8]}"
    output_dir = cfg.output_dir or str(Path(cfg.query_model).resolve().parent.parent)
    run = training_config(cfg, base, gallery_model=gallery_model, run_name=name, output_dir=output_dir)
    splits, catalogue = refresh_splits(cfg, run, stored, meta)
    if cfg.epochs:
        result = RefreshTrainer(run, splits, cfg.query_model).fit(resume=resume)
    else:
        result = _untrained(run, splits, cfg.query_model, resume=resume)
    if cfg.linear:
        result = with_linear_map(result, catalogue_targets(catalogue, splits.val, stored))
    return RefreshResult(result, run.run_dir, dict(splits.protocol))


def _untrained(run: TrainRunConfig, splits: Splits, query_model: str, *, resume: bool) -> TrainResult:
    """refresh.epochs=0: the query model itself, saved as the run's model (the linear map follows)."""
    final = run.run_dir / FINAL_MODEL
    if final.exists() and not resume:
        raise ConfigError(f"{run.run_dir} already holds a run; pass --resume to continue it, or choose another "
                          "name (name=...)")
    if not final.exists():
        loaded = load_checkpoint(query_model)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.run_dir / "config.yaml", dump_yaml(run))
        save_checkpoint(final, loaded.model, classes=loaded.meta.classes, compatible_with=loaded.meta.compatible_with,
                        compatibility=loaded.meta.compatibility, config=to_dict(run),
                        extra={"train_seconds": 0.0, "protocol": splits.protocol, "refresh_epochs": 0})
    return TrainResult(final, load_checkpoint(final).meta, 0.0, [])


def catalogue_targets(train: ImageSet, val: ImageSet, stored: StoredGallery) -> MapTargets:
    """The catalogue's shares with their stored gallery embeddings (what `refresh.linear` maps onto)."""
    row = {source: i for i, source in enumerate(stored.sources) if source is not None}

    def targets(items: ImageSet) -> np.ndarray:
        picked = np.asarray([row.get(source, -1) for source in items.sources])
        if (picked < 0).any():  # unreachable: every catalogue item comes from the index
            raise CompatibilityError("refresh: a catalogue item is missing from the index")
        return unit(stored.vectors[picked].astype(np.float64))

    return MapTargets(train.images, targets(train), train.labels.numpy(), val.images, targets(val),
                      val.labels.numpy(), fitted_on="the index's stored embeddings")


def with_linear_map(result: TrainResult, targets: MapTargets) -> TrainResult:
    """The refreshed model followed by the map (hetsearch.train.embedding_map), saved again."""
    apply_linear_map(result.model_path, targets)
    return TrainResult(result.model_path, load_checkpoint(result.model_path).meta, result.train_seconds,
                       result.history)


def split_overrides(overrides: list[str]) -> tuple[dict, dict]:
    """``key=value`` overrides (values parsed as YAML): (refresh options, training overrides such
    as runtime.device=cuda, kept as ``key=value`` text for the training config)."""
    names = {f for f in RefreshConfig.__dataclass_fields__ if f != "overrides"}
    fields, training = {}, {}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. epochs=3 or runtime.device=cuda")
        if "." in key:
            training[key] = item.partition("=")[2]
        elif key in names:
            apply_overrides(fields, [item])
        else:
            raise ConfigError(f"override {key}: not a refresh option; expected one of {', '.join(sorted(names))}, "
                              "or a training key with a dot (train.*, runtime.*, compat.*)")
    typed = to_dict(from_dict(RefreshConfig, {"index": "-", "query_model": "-", **fields}))
    return {k: typed[k] for k in fields}, training
