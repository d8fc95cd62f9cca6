"""The user's own images as registered data sets: an image folder tree, or a CSV of paths.

Both list their items as `FileSet`s (paths + labels; nothing is decoded here): `make_splits`
picks the items a run uses and decodes them into memory, or leaves the training split on disk to
be streamed (``data.storage``).

Image folder layouts (``data.options.layout``, "auto" recognises them and says which it found):

==================== ===================================== ==========================================
layout               folders                               splits
==================== ===================================== ==========================================
class_folders        ``ROOT/CLASS/*``                      one pool, split by the protocol
train_test           ``ROOT/{train,test}/CLASS/*``         official train and test splits
train_query_gallery  ``ROOT/{train,query,gallery}/CLASS/*`` official train, query and gallery splits
unlabelled           ``ROOT/*``                            one unlabelled pool (label-free training)
==================== ===================================== ==========================================

The split layouts may add ``ROOT/val/CLASS/*`` (an official validation split). Images are found
recursively inside each class folder; hidden files and other extensions are ignored; class names
are folder names (numeric names sorted by value).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from hetsearch.data.config import DataConfig
from hetsearch.data.fileset import IMAGE_EXTENSIONS, DecodeSpec, FileSet, decode_image  # noqa: F401 (re-export)
from hetsearch.data.registry import DatasetSource, RawData, register_dataset
from hetsearch.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLIT_DIRS = ("train", "val", "test", "query", "gallery")
LAYOUTS = {
    "class_folders": "ROOT/CLASS/*",
    "train_test": "ROOT/{train,test}/CLASS/*",
    "train_query_gallery": "ROOT/{train,query,gallery}/CLASS/*",
    "unlabelled": "ROOT/*",
}
_LAYOUT_SPLITS = {"train_test": ("train", "test"), "train_query_gallery": ("train", "query", "gallery")}


def class_sort_key(name: str) -> tuple:
    """Numeric class names sort by value ("2" before "10"), others alphabetically."""
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


_class_sort_key = class_sort_key  # older name


def _visible(path: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (sorted; hidden files and other extensions left out)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and _visible(p, folder))


def _subdirs(folder: Path) -> list[Path]:
    return [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]


def list_class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """``[(class name, files)]`` for ``root/CLASS/*`` (classes without images are left out)."""
    per_class = []
    for class_dir in sorted(_subdirs(root), key=lambda d: class_sort_key(d.name)):
        files = list_images(class_dir)
        if files:
            per_class.append((class_dir.name, files))
        else:
            log.warning("%s: no image files, class left out", class_dir)
    return per_class


def detect_layout(root: Path) -> str:
    """Which of `LAYOUTS` ``root`` follows (see module doc)."""
    subdirs = {d.name: d for d in _subdirs(root)}
    names = set(subdirs)
    for layout, required in (("train_query_gallery", {"train", "query", "gallery"}), ("train_test", {"train", "test"})):
        allowed = set(required) | {"val"}
        if required <= names and names <= allowed:
            if all(_subdirs(subdirs[n]) for n in required):
                return layout
            log.warning("%s: sub-folders %s hold no class folders; reading them as classes", root, sorted(names))
            return "class_folders"
    if not names and list_images(root, recursive=False):
        return "unlabelled"
    direct = list_images(root, recursive=False) if names else []
    if direct:
        log.warning("%s: %d image file(s) directly in the root are ignored (layout ROOT/CLASS/*)", root, len(direct))
    return "class_folders"


@dataclass
class ImageFolderOptions:
    """``data.options`` of ``data.source: image_folder``.

    layout: auto | class_folders | train_test | train_query_gallery | unlabelled (see module doc).
    """

    layout: str = "auto"

    def validate(self) -> None:
        if self.layout not in ("auto", *LAYOUTS):
            raise ConfigError(f"data.options.layout: got {self.layout!r}, expected auto, {', '.join(LAYOUTS)}")


def _fileset(items: list[tuple[Path, int]], classes: list[str], decode: DecodeSpec) -> FileSet:
    return FileSet(paths=[str(p) for p, _ in items], labels=torch.tensor([lab for _, lab in items], dtype=torch.int64),
                   classes=classes, decode=decode)


def _no_images(root: Path, layout: str) -> DataError:
    return DataError(f"{root}: no images for layout {LAYOUTS[layout]} (extensions "
                     f"{', '.join(sorted(IMAGE_EXTENSIONS))}); set data.options.layout to the folder's layout")


def read_image_folder(root: Path, layout: str, decode: DecodeSpec) -> RawData:
    """A folder tree as RawData (``layout`` already resolved, not "auto")."""
    if layout == "unlabelled":
        files = list_images(root)
        if not files:
            raise _no_images(root, layout)
        return RawData(splits={"all": _fileset([(p, -1) for p in files], [], decode)}, classes=[],
                       layout=LAYOUTS[layout], root=str(root), labelled=False)
    if layout == "class_folders":
        per_class = list_class_folders(root)
        if not per_class:
            raise DataError(f"{root}: no class sub-folders with images (expected ROOT/CLASS_NAME/IMAGE with "
                            f"extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
        classes = [name for name, _ in per_class]
        items = [(p, label) for label, (_, files) in enumerate(per_class) for p in files]
        return RawData(splits={"all": _fileset(items, classes, decode)}, classes=classes,
                       layout=LAYOUTS[layout], root=str(root))
    names = list(_LAYOUT_SPLITS[layout]) + (["val"] if (root / "val").is_dir() else [])
    per_split = {}
    for name in names:
        if not (root / name).is_dir():
            raise DataError(f"{root}: layout {LAYOUTS[layout]} needs the sub-folder {name}/")
        per_split[name] = list_class_folders(root / name)
        if not per_split[name]:
            raise DataError(f"{root / name}: no class sub-folders with images (layout {LAYOUTS[layout]})")
    classes = sorted({c for groups in per_split.values() for c, _ in groups}, key=class_sort_key)
    index = {c: i for i, c in enumerate(classes)}
    splits = {name: _fileset([(p, index[c]) for c, files in groups for p in files], classes, decode)
              for name, groups in per_split.items()}
    pattern = LAYOUTS[layout].replace("{train,", "{train,val," if "val" in names else "{train,")
    return RawData(splits=splits, classes=classes, layout=pattern, root=str(root))


@register_dataset
class ImageFolderDataset(DatasetSource):
    name = "image_folder"
    help = "a folder tree: ROOT/CLASS/*, ROOT/{train,test}/CLASS/*, ROOT/{train,query,gallery}/CLASS/*, ROOT/*"
    Options = ImageFolderOptions

    def load(self, cfg: DataConfig, options: ImageFolderOptions) -> RawData:
        if cfg.root is None:
            raise ConfigError("data.root: required for data.source 'image_folder' (the folder of images, e.g. "
                              "ROOT/CLASS/* or ROOT/{train,test}/CLASS/*)")
        root = Path(cfg.root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: image folder not found (data.root)")
        layout = detect_layout(root) if options.layout == "auto" else options.layout
        return read_image_folder(root, layout, DecodeSpec.from_config(cfg))


# ---------------------------------------------------------------------------- CSV

@dataclass
class CsvOptions:
    """``data.options`` of ``data.source: csv``.

    path: the CSV file (default: ``data.root`` when it names a .csv file).
    path_column / label_column: the columns holding the image path and the class name.
    split_column: an optional column naming each row's official split (train, val, test, query,
        gallery); rows are then used as split, like the image folder's split layouts.
    """

    path: Optional[str] = None
    path_column: str = "path"
    label_column: str = "label"
    split_column: Optional[str] = None


def _csv_file(cfg: DataConfig, options: CsvOptions) -> Path:
    if options.path is not None:
        return Path(options.path).expanduser()
    if cfg.root is not None and Path(cfg.root).suffix.lower() == ".csv":
        return Path(cfg.root).expanduser()
    raise ConfigError("data.options.path: required for data.source 'csv' (a CSV file with header 'path,label'; "
                      "or set data.root to the .csv file)")


def read_csv_rows(csv_file: Path) -> tuple[list[dict], list[str]]:
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = [name.strip() for name in reader.fieldnames or []]
    except FileNotFoundError:
        raise DataError(f"{csv_file}: CSV file not found (data.options.path)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_file}: cannot read CSV ({exc})") from None
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in rows], header


@register_dataset
class CsvDataset(DatasetSource):
    name = "csv"
    help = "a CSV file with header path,label[,split] (relative paths are relative to the CSV's folder)"
    Options = CsvOptions
    legacy_keys = {"csv_path": "path"}

    def load(self, cfg: DataConfig, options: CsvOptions) -> RawData:
        csv_file = _csv_file(cfg, options)
        rows, header = read_csv_rows(csv_file)
        needed = [options.path_column, options.label_column] + ([options.split_column] if options.split_column else [])
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(f"{csv_file}: header {header} lacks {', '.join(map(repr, missing))} "
                            f"(expected '{','.join(needed)}'; see data.options)")
        if not rows:
            raise DataError(f"{csv_file}: no rows after the header (expected one '{','.join(needed)}' row per image)")
        base = csv_file.parent
        entries: list[tuple[Path, str, str]] = []
        for line_no, row in enumerate(rows, start=2):
            path_text, label = row.get(options.path_column, ""), row.get(options.label_column, "")
            if not path_text or not label:
                raise DataError(f"{csv_file}, line {line_no}: empty path or label")
            split = row.get(options.split_column, "") if options.split_column else "all"
            if split not in (("all",) if not options.split_column else SPLIT_DIRS):
                raise DataError(f"{csv_file}, line {line_no}: split {split!r} in column {options.split_column!r}; "
                                f"expected one of {', '.join(SPLIT_DIRS)}")
            path = Path(path_text).expanduser()
            entries.append((path if path.is_absolute() else base / path, label, split))
        classes = sorted({label for _, label, _ in entries}, key=class_sort_key)
        index = {name: i for i, name in enumerate(classes)}
        decode = DecodeSpec.from_config(cfg)
        names = sorted({s for _, _, s in entries}, key=SPLIT_DIRS.index) if options.split_column else ["all"]
        splits = {name: _fileset([(p, index[lab]) for p, lab, s in entries if s == name], classes, decode)
                  for name in names}
        if options.split_column:
            given = set(splits) - {"val"}
            if given not in ({"train", "test"}, {"train", "query", "gallery"}):
                raise DataError(f"{csv_file}: column {options.split_column!r} names splits {sorted(splits)}; expected "
                                "train and test, or train, query and gallery (val optional)")
        layout = f"CSV {','.join(needed)}" + (f" (splits {', '.join(splits)})" if options.split_column else "")
        return RawData(splits=splits, classes=classes, layout=layout, root=str(csv_file))
