"""`load_raw` / `load_source`: the raw data of the configured data set, before any protocol split.

The data set is looked up in the registry (`hetsearch.data.registry`); nothing here knows the
names of the built-in data sets.
"""

from __future__ import annotations

from hetsearch.data.config import DataConfig
from hetsearch.data.imageset import ImageSet
from hetsearch.data.registry import RawData, get_dataset


def load_raw(cfg: DataConfig) -> RawData:
    """The data set's own splits (ImageSets or FileSets), its classes and layout.

    Raises ConfigError for invalid settings, DataError for missing or unreadable data (with a
    hint on how to get it).
    """
    cfg.validate()
    dataset = get_dataset(cfg.source)
    return dataset().load(cfg, cfg.source_options())


def load_source(cfg: DataConfig) -> dict[str, ImageSet]:
    """Every split of the data set decoded into memory: ``{"train", "test"}`` (official splits, e.g.
    Fashion-MNIST), ``{"train", "query", "gallery"}``, or ``{"all"}``; optionally with ``"val"``.

    Images come back as uint8 (N, channels, image_size, image_size); labels index into the data
    set's class list.
    """
    raw = load_raw(cfg)
    return {name: materialize(part, cfg, f"{raw.root} [{name}]") for name, part in raw.splits.items()}


def materialize(part, cfg: DataConfig, what: str = "") -> ImageSet:
    """An ImageSet as is; a FileSet decoded (in ``data.num_workers`` processes when it is large)."""
    if isinstance(part, ImageSet):
        return part
    workers = 0 if len(part) < 2048 else cfg.num_workers
    return part.materialize(num_workers=workers, what=what)
