"""Data configuration: where images come from and how they are split for training/evaluation.

A plain dataclass with simple field types (str, int, float, bool, Optional) so the config loader
can build it from a YAML mapping (``DataConfig(**mapping)``) and write it back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hetsearch.errors import ConfigError

SOURCES = ("fashion_mnist", "image_folder", "csv")
PROTOCOLS = ("closed_set", "open_set")
GALLERIES = ("auto", "train", "test_rest")
BAD_IMAGE_POLICIES = ("fail", "skip")
RESIZE_MODES = ("center_crop", "stretch")


@dataclass
class DataConfig:
    """Everything `load_source` and `make_splits` need.

    Fields:
        source: "fashion_mnist" (IDX files), "image_folder" (one sub-folder per class) or
            "csv" (a ``path,label`` file with header).
        root: fashion_mnist: folder with the four IDX files (gz or not; the torchvision layout
            ``root/FashionMNIST/raw`` is accepted too; None = the Debian package's folder).
            image_folder: the folder holding one sub-folder per class.
            csv: may name the CSV file when ``csv_path`` is None.
        download: fashion_mnist only: download with torchvision when the files are not found
            (needs internet). Files go to ``root`` or ``~/.cache/hetsearch/fashion_mnist``.
        csv_path: the CSV file for source "csv"; relative image paths in it are resolved
            relative to the CSV file's folder.
        image_size: side of the square images every item is brought to.
        channels: 1 (greyscale) or 3 (RGB).
        resize: how user images are brought to ``image_size``: "center_crop" (shorter side
            resized to ``image_size``, then the centre cropped: keeps the aspect ratio) or
            "stretch" (plain resize to a square: keeps the whole picture).
        protocol: "closed_set" (train and test share classes) or "open_set" (disjoint classes).
        open_set_train_fraction: fraction of classes used for training in the open set.
        val_fraction: stratified fraction of the training split held out for validation.
        test_fraction: stratified fraction held out as test split, for sources without a
            predefined test split (closed set only; in the open set the test classes form it).
        gallery: "train" (gallery = the whole training split, val included), "test_rest" (gallery = the test split itself;
            each query is excluded from its own results) or "auto" (train for closed set,
            test_rest for open set, where the training classes cannot be retrieved).
        max_train_items / max_test_items: seeded stratified subsets for quick runs and tests
            (train cap applies before the validation split).
        seed: seeds every random choice of the data layer (class split, splits, subsets).
        on_bad_image: "fail" (raise DataError naming the file) or "skip" (skip and count it).
    """

    source: str = "fashion_mnist"
    root: Optional[str] = None
    download: bool = False
    csv_path: Optional[str] = None
    image_size: int = 28
    channels: int = 1
    resize: str = "center_crop"
    protocol: str = "closed_set"
    open_set_train_fraction: float = 0.5
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    gallery: str = "auto"
    max_train_items: Optional[int] = None
    max_test_items: Optional[int] = None
    seed: int = 0
    on_bad_image: str = "fail"

    def validate(self) -> "DataConfig":
        """Raise ConfigError naming the first invalid field; return self for chaining."""

        def choice(field: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, field)
            if value not in allowed:
                raise ConfigError(
                    f"data.{field}: got {value!r}, expected one of {', '.join(map(repr, allowed))}"
                )

        choice("source", SOURCES)
        choice("protocol", PROTOCOLS)
        choice("gallery", GALLERIES)
        choice("on_bad_image", BAD_IMAGE_POLICIES)
        choice("resize", RESIZE_MODES)
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
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise ConfigError(f"data.test_fraction: got {self.test_fraction!r}, expected 0 < x < 1")
        for field in ("max_train_items", "max_test_items"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"data.{field}: got {value!r}, expected a positive integer or null")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"data.seed: got {self.seed!r}, expected an integer")
        if self.protocol == "open_set" and self.gallery == "train":
            raise ConfigError(
                "data.gallery: 'train' is invalid with data.protocol 'open_set' (the training classes "
                "never occur among the queries); use 'test_rest' or 'auto'"
            )
        return self

    def resolved_gallery(self) -> str:
        """'train' or 'test_rest': what 'auto' means for this protocol."""
        if self.gallery != "auto":
            return self.gallery
        return "train" if self.protocol == "closed_set" else "test_rest"
