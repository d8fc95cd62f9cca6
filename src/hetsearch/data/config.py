"""Data configuration: which registered data set, its own options, and how it is split.

A plain dataclass with simple field types (str, int, float, bool, Optional, dict) so the config
loader can build it from a YAML mapping and write it back unchanged. Options that belong to one
data set live in ``data.options`` and are typed by that data set's ``Options`` dataclass (see
`hetsearch.data.registry`); older flat keys (``data.csv_path``, ``data.download``) are moved there
when an old config or checkpoint is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from PIL import ImageColor

from hetsearch.data.registry import all_legacy_keys, get_dataset
from hetsearch.errors import ConfigError
from hetsearch.utils.typed_config import from_dict

PROTOCOLS = ("auto", "closed_set", "open_set")
GALLERIES = ("auto", "train", "test_rest", "catalogue")
BAD_IMAGE_POLICIES = ("fail", "skip")
RESIZE_MODES = ("center_crop", "stretch")
STORAGE_MODES = ("auto", "memory", "stream")


@dataclass
class DataConfig:
    """Everything `load_source` and `make_splits` need.

    Fields:
        source: a registered data set (`hetsearch.data.registry.list_datasets()`):
            "fashion_mnist" (IDX files), "image_folder" (a folder tree, layouts below) or "csv"
            (a ``path,label[,split]`` file with header).
        root: where the data set lives. fashion_mnist: folder with the four IDX files (None = the
            Debian package's folder). image_folder: the folder (layouts: ``ROOT/CLASS/*``,
            ``ROOT/{train,test}/CLASS/*``, ``ROOT/{train,query,gallery}/CLASS/*`` (each optionally
            with ``val/``), unlabelled ``ROOT/*``; ``data.options.layout`` forces one).
            csv: the CSV file (or give ``data.options.path``).
        options: the data set's own options (``data.options.KEY``), e.g. fashion_mnist
            ``download``, image_folder ``layout``, csv ``path`` / ``split_column``.
        image_size: side of the square images every item is brought to.
        channels: 1 (greyscale) or 3 (RGB).
        resize: how user images are brought to ``image_size``: "center_crop" (shorter side
            resized to ``image_size``, then the centre cropped: keeps the aspect ratio) or
            "stretch" (plain resize to a square: keeps the whole picture).
        background: colour transparent pixels are composited on (a Pillow colour: "white",
            "black", "#808080", "rgb(10,20,30)").
        protocol: "auto" (the data decides: closed set, unless official test classes are disjoint
            from the training classes, then open set), "closed_set" (train and test share classes)
            or "open_set" (disjoint classes; a shared-class data set is split by class).
        open_set_train_fraction: fraction of classes used for training when the open set has to
            split the classes itself.
        val_fraction: stratified fraction of the training split held out for validation (unless
            the data set has an official ``val`` split or ``val_classes`` is set).
        val_classes: open set only: training classes held out of training and used, all their
            images, as the validation split (a class-disjoint validation that mirrors the open-set
            test: selection then never sees a test class nor a trained one). 0 (default): off,
            validation is ``val_fraction`` of the training items; 0 < x < 1: that fraction of the
            training classes (rounded, at least one); an integer >= 1: that many classes. At least
            one training class must remain; seeded (``seed``), independent of the other splits.
        test_fraction: stratified fraction held out as test split, for data without official
            splits (closed set only; in the open set the test classes form it).
        gallery: "train" (gallery = the whole training split, val included), "test_rest"
            (gallery = the test split itself; each query is excluded from its own results) or
            "auto" (an official gallery split when there is one, else train for the closed set,
            test_rest for the open set), or "catalogue" (open set: the test classes' own training
            images, a catalogue the gallery model indexed, searched by their never-seen test
            images; data without them splits the test classes' items by ``test_fraction``).
        max_train_items / max_test_items: seeded stratified subsets for quick runs and tests
            (train cap applies before the validation split).
        seed: seeds every random choice of the data layer (class split, splits, subsets).
        on_bad_image: "fail" (raise DataError naming the file) or "skip" (skip and count it).
        storage: "memory" (decode everything once and keep it as one uint8 tensor), "stream"
            (the training split is decoded and augmented on the fly in DataLoader workers) or
            "auto" (stream when the decoded data set would exceed ``stream_above_gb``).
        stream_above_gb: the "auto" threshold, in GB of decoded uint8 pixels.
        num_workers: DataLoader worker processes for streaming and parallel decoding
            (None: one per CPU core, at most 8).
    """

    source: str = "fashion_mnist"
    root: Optional[str] = None
    options: dict = field(default_factory=dict)
    image_size: int = 28
    channels: int = 1
    resize: str = "center_crop"
    background: str = "white"
    protocol: str = "auto"
    open_set_train_fraction: float = 0.5
    val_fraction: float = 0.1
    val_classes: float = 0.0
    test_fraction: float = 0.2
    gallery: str = "auto"
    max_train_items: Optional[int] = None
    max_test_items: Optional[int] = None
    seed: int = 0
    on_bad_image: str = "fail"
    storage: str = "auto"
    stream_above_gb: float = 2.0
    num_workers: Optional[int] = None

    # ------------------------------------------------------------------ old configs
    @classmethod
    def upgrade_mapping(cls, data: dict) -> dict:
        """Move flat per-source keys of older configs/checkpoints into ``options``.

        Older configs wrote every source's fields flat (``download: false, csv_path: null``); a
        key at its old default is dropped, a set key moves into the configured source's options,
        and a set key of another source is an error naming both.
        """
        data = dict(data)
        source = data.get("source", cls.source)
        legacy = all_legacy_keys()
        for owner, keys in legacy.items():
            for old, new in keys.items():
                if old not in data:
                    continue
                value = data.pop(old)
                if value in (None, False):
                    continue
                if owner != source:
                    raise ConfigError(f"data.{old}: applies to data.source {owner!r} only (the source is {source!r})")
                options = dict(data.get("options") or {})
                options.setdefault(new, value)
                data["options"] = options
        return data

    # ------------------------------------------------------------------ checks
    def source_options(self) -> Any:
        """The data set's typed options (its ``Options`` dataclass) built from ``self.options``."""
        dataset = get_dataset(self.source)
        if not isinstance(self.options, dict):
            raise ConfigError(f"data.options: expected a mapping, got {self.options!r}")
        return from_dict(dataset.Options, dict(self.options), f"data.options ({self.source})")

    def background_rgb(self) -> tuple[int, int, int]:
        try:
            rgb = ImageColor.getrgb(str(self.background))
        except ValueError:
            raise ConfigError(f"data.background: got {self.background!r}, expected a colour such as white, "
                              "black, #808080 or rgb(10,20,30)") from None
        return tuple(int(v) for v in rgb[:3])  # type: ignore[return-value]

    def validate(self) -> "DataConfig":
        """Raise ConfigError naming the first invalid field; return self for chaining."""

        def choice(field_name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, field_name)
            if value not in allowed:
                raise ConfigError(
                    f"data.{field_name}: got {value!r}, expected one of {', '.join(map(repr, allowed))}"
                )

        options = self.source_options()  # also checks data.source
        self.options = asdict(options)   # written back with every option, defaults included
        choice("protocol", PROTOCOLS)
        choice("gallery", GALLERIES)
        choice("on_bad_image", BAD_IMAGE_POLICIES)
        choice("resize", RESIZE_MODES)
        choice("storage", STORAGE_MODES)
        self.background_rgb()
        if self.channels not in (1, 3):
            raise ConfigError(f"data.channels: got {self.channels!r}, expected 1 or 3")
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or self.image_size < 1:
            raise ConfigError(f"data.image_size: got {self.image_size!r}, expected a positive integer")
        if not 0.0 < float(self.open_set_train_fraction) < 1.0:
            raise ConfigError(
                f"data.open_set_train_fraction: got {self.open_set_train_fraction!r}, expected 0 < x < 1"
            )
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ConfigError(f"data.val_fraction: got {self.val_fraction!r}, expected 0 <= x < 1")
        self._check_val_classes()
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise ConfigError(f"data.test_fraction: got {self.test_fraction!r}, expected 0 < x < 1")
        if not float(self.stream_above_gb) > 0:
            raise ConfigError(f"data.stream_above_gb: got {self.stream_above_gb!r}, expected a positive number")
        for name in ("max_train_items", "max_test_items"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"data.{name}: got {value!r}, expected a positive integer or null")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise ConfigError(f"data.num_workers: got {self.num_workers!r}, expected an integer >= 0 or null")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"data.seed: got {self.seed!r}, expected an integer")
        if self.gallery == "catalogue" and self.protocol == "closed_set":
            raise ConfigError("data.gallery: 'catalogue' (the new classes' own indexed images) needs new classes: "
                              "use data.protocol=open_set (or auto on data whose test classes are new)")
        if self.protocol == "open_set" and self.gallery == "train":
            raise ConfigError(
                "data.gallery: 'train' is invalid with data.protocol 'open_set' (the training classes "
                "never occur among the queries); use 'test_rest' or 'auto'"
            )
        return self

    def _check_val_classes(self) -> None:
        """``val_classes``: 0, a fraction 0 < x < 1 or a whole count >= 1; open set (or auto) only."""
        value = self.val_classes
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and (
            value < 1 or float(value) == int(value))
        if not ok:
            raise ConfigError(f"data.val_classes: got {value!r}, expected 0 (off), a fraction 0 < x < 1 of the "
                              "training classes or a whole number of classes >= 1")
        if value and self.protocol == "closed_set":
            raise ConfigError("data.val_classes: holds whole training classes out as validation classes, which only "
                              "the open set allows (data.protocol is 'closed_set'); use data.val_fraction")

    def val_class_count(self, num_train_classes: int) -> int:
        """How many of ``num_train_classes`` training classes ``val_classes`` holds out (0: off)."""
        value = float(self.val_classes)
        if not value:
            return 0
        count = max(1, round(value * num_train_classes)) if value < 1 else int(value)
        if count >= num_train_classes:
            raise ConfigError(f"data.val_classes: {self.val_classes:g} holds out {count} of the "
                              f"{num_train_classes} training classes; at least one must stay for training")
        return count

    def resolved_gallery(self, protocol: str | None = None) -> str:
        """'train' or 'test_rest': what 'auto' means for the (resolved) protocol."""
        if self.gallery != "auto":
            return self.gallery
        protocol = protocol or self.protocol
        return "test_rest" if protocol == "open_set" else "train"
