"""A training run's whole config, checked before any data is read: `check_run_config`.

Loading a config (`hetsearch.utils.typed_config.load_config`) already checks every key and type
and each section's own numbers (`validate()`). What needs more than one section, or the
registries (backbones, heads, task losses, compatibility methods), or the gallery checkpoint, is
checked here, each as one `ConfigError` line, before the data set is read: `Trainer` calls it
first. (`hetsearch train` checks the registry names earlier still, before torch is imported:
`hetsearch.registries.check_config_names`.)
"""

from __future__ import annotations

from hetsearch.compat.checks import check_compat_config
from hetsearch.errors import ConfigError
from hetsearch.models.embedding_model import EMBEDDING_LAYERS
from hetsearch.models.heads import HEADS
from hetsearch.models.registry import BACKBONES
from hetsearch.train.loss import TASK_LOSSES, label_free_without_term
from hetsearch.train.schedule import check_optimizer

AMP_MODES = ("auto", "off", "bf16", "fp16")


def check_run_config(cfg) -> None:
    """``cfg``: a `TrainRunConfig`."""
    model = cfg.model
    BACKBONES.check(model.backbone)
    HEADS.check(model.head)
    if model.embedding_layer not in EMBEDDING_LAYERS:
        raise ConfigError(f"model.embedding_layer: expected one of {', '.join(EMBEDDING_LAYERS)}, "
                          f"got {model.embedding_layer!r}")
    TASK_LOSSES.check(cfg.train.task_loss)
    check_optimizer(cfg.train.optimizer)
    if cfg.runtime.amp not in AMP_MODES:
        raise ConfigError(f"runtime.amp: got {cfg.runtime.amp!r}, expected auto, off, bf16 or fp16")
    check_compat_config(cfg.compat, model=model, data=cfg.data)
    if cfg.compat.linear_map and not cfg.compat.gallery_model:
        raise ConfigError("compat.linear_map: maps the query embedding onto a gallery model's; set "
                          "compat.gallery_model=PATH/model.pt (or compat.linear_map=false)")
    if cfg.compat.linear_map and model.embedding_layer == "backbone":
        raise ConfigError("compat.linear_map: model.embedding_layer=backbone has no embedding head to fold the map "
                          "into; use model.embedding_layer=head (or compat.linear_map=false)")
    if cfg.compat.method == "none" and not TASK_LOSSES[cfg.train.task_loss].uses_labels:
        raise label_free_without_term()
