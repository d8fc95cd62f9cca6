"""Fashion-MNIST from IDX files: the Debian package, a user folder, or a torchvision download.

Lookup order: ``data.root`` when given (the folder itself, then torchvision's
``root/FashionMNIST/raw`` layout); otherwise the folder of the Debian package
``dataset-fashion-mnist`` (asked from ``dpkg -L``, falling back to its usual path), then the
download cache. Only with ``data.download: true`` is anything fetched from the network.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dataclasses import dataclass

from hetsearch.data.config import DataConfig
from hetsearch.data.fileset import IMAGE_EXTENSIONS
from hetsearch.data.idx import read_idx
from hetsearch.data.imageset import ImageSet
from hetsearch.data.registry import DatasetSource, RawData, register_dataset
from hetsearch.data.transforms import fit_tensor_images
from hetsearch.errors import DataError

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_NAMES = [name for pair in FILES.values() for name in pair]


def _find_file(folder: Path, name: str) -> Optional[Path]:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _complete(folder: Path) -> bool:
    return all(_find_file(folder, name) is not None for name in _ALL_NAMES)


def debian_package_dir() -> Optional[Path]:
    """The folder holding the Debian package's IDX files, or None when it is not installed.

    Asks ``dpkg -L`` (so a relocated package is found), then tries the usual path.
    """
    if shutil.which("dpkg") is not None:
        try:
            listing = subprocess.run(
                ["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if line.strip().endswith("train-images-idx3-ubyte.gz"):
                folder = Path(line.strip()).parent
                if _complete(folder):
                    return folder
    return DEBIAN_DEFAULT_DIR if _complete(DEBIAN_DEFAULT_DIR) else None


def default_cache_dir() -> Path:
    """Where ``download: true`` puts the files when ``data.root`` is not given."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hetsearch" / "fashion_mnist"


def _candidates(root: Path) -> list[Path]:
    return [root, root / "FashionMNIST" / "raw"]


def _looks_like_image_folder(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    for i, path in enumerate(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return True
        if i > 2000:
            break
    return False


def _missing_message(looked_in: list[Path]) -> str:
    where = ", ".join(str(p) for p in looked_in) or "(nowhere)"
    if looked_in and _looks_like_image_folder(looked_in[0]):
        return (f"{looked_in[0]} (data.root) holds image files, not the Fashion-MNIST IDX files that "
                "data.source 'fashion_mnist' (the default) reads: set data.source=image_folder to use your images")
    return (
        "Fashion-MNIST not found (looked for train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        f"t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in: {where}). Get it with one of: "
        f"`apt-get install -y {DEBIAN_PACKAGE}`; or set data.root=FOLDER to a folder holding those four IDX "
        "files; or set data.download=true to download them with torchvision (needs internet)."
    )


def _download(target: Path) -> Path:
    """Fetch the files with torchvision into ``target/FashionMNIST/raw``; return that folder."""
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError as exc:  # pragma: no cover - torchvision is a dependency
        raise DataError(f"data.download=true needs torchvision ({exc})") from None
    log.info("downloading Fashion-MNIST into %s", target)
    try:
        FashionMNIST(root=str(target), train=True, download=True)
    except Exception as exc:  # network and mirror errors come in many types
        raise DataError(
            f"downloading Fashion-MNIST into {target} failed ({exc}); check the internet connection, or "
            f"`apt-get install -y {DEBIAN_PACKAGE}`, or set data.root=FOLDER to a folder with the IDX files"
        ) from None
    return target / "FashionMNIST" / "raw"


def find_fashion_mnist(root: Optional[str] = None, download: bool = False) -> Path:
    """The folder holding all four IDX files; downloads when allowed, else raises DataError."""
    looked_in: list[Path] = []
    if root is not None:
        root_path = Path(root).expanduser()
        for folder in _candidates(root_path):
            looked_in.append(folder)
            if _complete(folder):
                return folder
        if download:
            return _download(root_path)
        raise DataError(_missing_message(looked_in))
    package_dir = debian_package_dir()
    if package_dir is not None:
        return package_dir
    looked_in.append(DEBIAN_DEFAULT_DIR)
    cache = default_cache_dir()
    for folder in _candidates(cache):
        looked_in.append(folder)
        if _complete(folder):
            return folder
    if download:
        return _download(cache)
    raise DataError(_missing_message(looked_in))


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of ``split`` ("train" or "test"), validated."""
    image_name, label_name = FILES[split]
    image_path = _find_file(folder, image_name)
    label_path = _find_file(folder, label_name)
    if image_path is None or label_path is None:
        raise DataError(_missing_message([folder]))
    images = read_idx(image_path, expected_ndim=3)
    labels = read_idx(label_path, expected_ndim=1)
    if images.dtype != np.uint8:
        raise DataError(f"{image_path}: expected unsigned-byte images, got {images.dtype}")
    if labels.dtype != np.uint8:
        raise DataError(f"{label_path}: expected unsigned-byte labels, got {labels.dtype}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{image_path} holds {images.shape[0]} images but {label_path} holds {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{label_path}: label {int(labels.max())} out of range 0..{len(FASHION_MNIST_CLASSES) - 1}")
    return images, labels


def load_fashion_mnist(cfg: DataConfig, download: bool = False) -> dict[str, ImageSet]:
    """The official train (60k) and test (10k) splits, brought to ``cfg.channels``/``image_size``."""
    folder = find_fashion_mnist(cfg.root, download)
    out: dict[str, ImageSet] = {}
    for split in ("train", "test"):
        images, labels = read_split(folder, split)
        tensor = torch.from_numpy(images).unsqueeze(1)  # N,1,28,28
        tensor = fit_tensor_images(tensor, cfg.channels, cfg.image_size)
        out[split] = ImageSet(
            images=tensor,
            labels=torch.from_numpy(labels.astype(np.int64)),
            classes=list(FASHION_MNIST_CLASSES),
            sources=[f"fashion_mnist:{split}:{i}" for i in range(len(labels))],
        )
    return out


@dataclass
class FashionMnistOptions:
    """``data.options`` of ``data.source: fashion_mnist``.

    download: download with torchvision when the files are not found (needs internet); files go
        to ``data.root`` or ``~/.cache/hetsearch/fashion_mnist``.
    """

    download: bool = False


@register_dataset
class FashionMnistDataset(DatasetSource):
    name = "fashion_mnist"
    help = "Fashion-MNIST (IDX files: the Debian package dataset-fashion-mnist, data.root, or a download)"
    Options = FashionMnistOptions
    legacy_keys = {"download": "download"}
    in_memory_only = True

    def load(self, cfg: DataConfig, options: FashionMnistOptions) -> RawData:
        splits = load_fashion_mnist(cfg, options.download)
        return RawData(splits=splits, classes=list(FASHION_MNIST_CLASSES), layout="IDX files, official train/test",
                       root=str(cfg.root or "dataset-fashion-mnist"))
