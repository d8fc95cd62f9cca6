"""The compatibility part of a run's config, checked before any data is read (one line each).

`check_compat_config` runs `CompatConfig.validate` (the method's form, weights, bank numbers), then
what needs the registry or the gallery checkpoint: every part of ``compat.method`` is a registered
method, ``compat.gallery_model`` names a file, and the checkpoint's metadata (read memory-mapped,
without its weights) agrees with the query model's config: the embedding width (when the
embedding is the projection head's output; a ``model.embedding_layer: backbone`` width is known
only once the backbone is built), the input channels and image size, and, for the terms that
declare `same_head` (BCT), the head type, scale and margin. The terms check the same again when
they are built, from the built model's spec.
"""

from __future__ import annotations

from hetsearch.compat.base import term_classes
from hetsearch.compat.gallery import check_gallery_file, check_same_embedding_space, check_same_head
from hetsearch.errors import ConfigError
from hetsearch.models.checkpoint import ModelMeta, read_checkpoint_meta
from hetsearch.models.embedding_model import ModelSpec


def check_compat_config(cfg, *, model, data) -> None:
    """``cfg``: a `CompatConfig`; ``model``, ``data``: the run's `ModelConfig` and `DataConfig`."""
    cfg.validate()
    classes = term_classes(cfg.method)
    if not classes:
        return
    if not cfg.gallery_model:
        raise ConfigError(f"compat.gallery_model: method {cfg.method!r} needs the path of a gallery "
                          "model checkpoint (e.g. compat.gallery_model=runs/gallery/model.pt)")
    check_gallery_file(cfg.gallery_model)
    gallery = read_checkpoint_meta(cfg.gallery_model)
    query = _query_spec(model, data, gallery)
    check_same_embedding_space(query, gallery, cfg.method)
    if any(cls.same_head for cls in classes.values()):
        check_same_head(query, gallery, cfg.method)


def _query_spec(model, data, gallery: ModelMeta) -> ModelSpec:
    """What the config says of the query model's embedding space and head (no model is built)."""
    width = model.embedding_dim if model.embedding_layer == "head" else gallery.spec.embedding_dim
    return ModelSpec(backbone=model.backbone, num_classes=0, embedding_dim=width, head=model.head,
                     head_scale=model.head_scale, head_margin=model.head_margin, in_chans=data.channels,
                     image_size=data.image_size)
