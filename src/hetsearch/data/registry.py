"""Data-set registry (`DATASETS`, a `hetsearch.utils.registry.Registry`): `get_dataset(name)`
instead of if/else ladders over source names.

A data set is a class registered with `@register_dataset` that declares

* ``name``: the value of ``data.source``;
* ``Options``: a dataclass of its own typed options (``data.options.KEY``), built by the config
  loader with the same rules as every other section (unknown keys list the valid ones);
* ``legacy_keys``: flat ``data.KEY`` fields of older configs that now live in its options
  (e.g. ``data.csv_path`` -> ``data.options.path``), so old checkpoints and YAML still load;
* ``load(cfg, options) -> RawData``: the raw splits before any protocol split.

``RawData.splits`` holds the splits the data set defines itself: ``{"all"}`` (one pool, split by
the protocol), ``{"train", "test"}`` or ``{"train", "query", "gallery"}`` (official splits, used
as given), optionally with ``"val"``. Each split is an `ImageSet` (in memory) or a `FileSet`
(files, decoded when needed); labels of all splits index ``classes``.

The built-in data sets register when `hetsearch.data` is imported (its `__init__` imports
`data.fashion_mnist` and `data.files`); the registry imports nothing of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from hetsearch.registries import DATASETS

if TYPE_CHECKING:  # pragma: no cover
    from hetsearch.data.config import DataConfig


@dataclass
class RawData:
    """What a data set holds, before the protocol splits it.

    Attributes:
        splits: split name -> ImageSet or FileSet (see module doc for the names).
        classes: the class names every split's labels index.
        layout: how the data set is organised, for people, e.g. ``ROOT/{train,test}/CLASS/*``.
        root: where it was read from (folder or file), for messages.
        labelled: False for unlabelled images (labels are all -1, ``classes`` is empty).
        skipped: unreadable files left out while listing (``on_bad_image: skip``).
    """

    splits: dict[str, Any]
    classes: list[str]
    layout: str
    root: str = ""
    labelled: bool = True
    skipped: list[str] = field(default_factory=list)

    @property
    def official(self) -> bool:
        """True when the data set defines its own train/test (or train/query/gallery) splits."""
        return "all" not in self.splits


class DatasetSource:
    """Base class of a registered data set (see module doc)."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    Options: ClassVar[type]
    legacy_keys: ClassVar[dict[str, str]] = {}
    # True when the data is always decoded into memory (e.g. IDX files): `data.storage` is ignored
    in_memory_only: ClassVar[bool] = False

    def load(self, cfg: "DataConfig", options: Any) -> RawData:  # pragma: no cover - interface
        raise NotImplementedError




def register_dataset(cls: type[DatasetSource]) -> type[DatasetSource]:
    """Class decorator: make ``cls`` available as ``data.source: cls.name`` (its ``help``, else its
    docstring, is the line `hetsearch list` shows)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a registered data set needs a name")
    return DATASETS.add(cls.name, cls, description=cls.help or None)


list_datasets = DATASETS.names
get_dataset = DATASETS.get  # the registered data set class; one ConfigError line listing the known names otherwise


def all_legacy_keys() -> dict[str, dict[str, str]]:
    """data set name -> {old flat data.KEY: option name}."""
    return {name: dict(DATASETS[name].legacy_keys) for name in DATASETS if DATASETS[name].legacy_keys}
