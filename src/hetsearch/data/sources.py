"""`load_source`: the raw data of the configured source, before any protocol split."""

from __future__ import annotations

from hetsearch.data.config import DataConfig
from hetsearch.data.imageset import ImageSet


def load_source(cfg: DataConfig) -> dict[str, ImageSet]:
    """``{"train", "test"}`` for sources with an official split (Fashion-MNIST), else ``{"all"}``.

    Images come back as uint8 (N, channels, image_size, image_size); labels index into the
    source's class list. Raises ConfigError for invalid settings, DataError for missing or
    unreadable data (with a hint on how to get it).
    """
    cfg.validate()
    if cfg.source == "fashion_mnist":
        from hetsearch.data.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(cfg)
    if cfg.source == "image_folder":
        from hetsearch.data.files import load_image_folder

        return load_image_folder(cfg)
    from hetsearch.data.files import load_csv

    return load_csv(cfg)
