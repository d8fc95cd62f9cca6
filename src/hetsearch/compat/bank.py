"""The gallery embedding bank: φ_g of every training image (K views each), computed once, on disk.

The gallery model is frozen and the training images are fixed, so their gallery embeddings are a
constant: the bank methods (contrastive, relational, bank_l2) read them instead of running the
gallery model every step, which makes them cost about what independent training costs.

Layout: `<bank.dir or output_dir/banks>/<key digest>/`
    bank.json   the key (gallery model id, training-data fingerprint, item count, K, the view
                family and seed, embedding width), shape, dtype, `complete`
    bank.npy    float16 (N, K, D), L2-normalised rows; opened with `np.load(mmap_mode="r")`
    chunks/     while building: one `.npy` per `chunk_items` images, each written atomically;
                an interrupted build resumes from the chunks already there
A key change (another gallery model, other training images or order, another K / view seed /
crop) gives another digest, hence another folder, built from scratch; every query model and the
supernet trained against the same gallery on the same data reuse one bank.

Row i is training item i (the order of `splits.train`), column v is view v (`ItemViews`: view 0
is the image as is). A gallery index folder built from the same images (`hetsearch index build
--dataset fashion_mnist:train`) can serve as the bank (`compat.bank.index=DIR`): its stored
vectors are φ_g of the images as they are, i.e. a K = 1 bank; items are matched by source
("fashion_mnist:train:123", or the image path), and the index must have been built by this
gallery model. Items of the training split missing from the index are an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hetsearch.compat.views import ItemViews
from hetsearch.data import ImageSet
from hetsearch.errors import CompatibilityError, ConfigError
from hetsearch.index.gallery import read_stored
from hetsearch.utils.io import atomic_write_json

BANK_FORMAT = 1
META_FILE = "bank.json"
ARRAY_FILE = "bank.npy"
CHUNK_DIR = "chunks"
DTYPE = np.float16


def data_fingerprint(train_set: ImageSet) -> str:
    """Identifies the training images, in order (pixels and sources)."""
    digest = hashlib.sha256()
    images = train_set.images.detach().cpu().contiguous()
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.numpy().tobytes())
    digest.update("\n".join(train_set.sources).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class BankKey:
    gallery_model_id: str
    data_fingerprint: str
    items: int
    views: int
    view_family: str          # json of ItemViews.signature
    embedding_dim: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]

    def to_dict(self) -> dict:
        return asdict(self)


class GalleryBank:
    """Unit-norm gallery embeddings (N, K, D) of the training items, plus the views that made them."""

    def __init__(self, array: np.ndarray, views: ItemViews, gallery_model_id: str, *, path: Path | None = None,
                 key: BankKey | None = None, source: str = "gallery_model", build_seconds: float = 0.0):
        if array.ndim != 3:
            raise ValueError(f"GalleryBank: expected an (N, K, D) array, got shape {array.shape}")
        self.array, self.views, self.gallery_model_id = array, views, gallery_model_id
        self.path, self.key, self.source, self.build_seconds = path, key, source, build_seconds
        self._tensors: dict[str, torch.Tensor] = {}

    @property
    def num_items(self) -> int:
        return int(self.array.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.array.shape[1])

    @property
    def dim(self) -> int:
        return int(self.array.shape[2])

    def tensor(self, device: torch.device | str) -> torch.Tensor:
        """The whole bank as a float16 tensor on `device` (read once per device, then cached)."""
        name = str(torch.device(device))
        if name not in self._tensors:
            self._tensors[name] = torch.from_numpy(np.array(self.array, dtype=DTYPE)).to(device)
        return self._tensors[name]

    def sample_views(self, images: torch.Tensor, indices: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniformly drawn view of each image (uint8) and the view ids (on the images' device)."""
        view_ids = torch.randint(0, self.num_views, (len(indices),), generator=generator, device=generator.device)
        view_ids = view_ids.to(images.device)
        table = getattr(self.views, "_table", None)
        if table is None or table[1].device != images.device or table[1].shape[:2] != (self.num_items, self.num_views):
            self.views.tabulate(self.num_items, self.num_views, images.device)
        return self.views(images, indices, view_ids), view_ids

    def neighbors(self, k: int, device: torch.device | str) -> torch.Tensor:
        """(N, k) int64: each item's k nearest other items by the gallery embeddings of view 0 (the
        gallery's own neighbourhoods), on `device`; computed once, cached in the bank folder."""
        name = f"neighbors_k{int(k)}"
        key = f"{name}@{torch.device(device)}"
        if key in self._tensors:
            return self._tensors[key]
        path = self.path / f"{name}.npy" if self.path is not None and self.source == "gallery_model" else None
        table = None
        if path is not None and path.is_file():
            try:
                table = np.load(path)
                table = table if table.shape == (self.num_items, k) else None
            except (OSError, ValueError):
                table = None
        if table is None:
            rows = self.tensor(device)[:, 0].float()
            out = []
            for start in range(0, self.num_items, 2048):
                sims = rows[start:start + 2048] @ rows.t()
                own = torch.arange(start, start + len(sims), device=sims.device)
                sims[torch.arange(len(sims), device=sims.device), own] = float("-inf")
                out.append(sims.topk(min(k, self.num_items - 1), dim=1).indices.cpu())
            table = torch.cat(out).numpy().astype(np.int64)
            if path is not None:
                _atomic_save_npy(path, table)
        self._tensors[key] = torch.from_numpy(np.asarray(table, dtype=np.int64)).to(device)
        return self._tensors[key]

    @property
    def summary(self) -> dict:
        return {"source": self.source, "path": str(self.path) if self.path else None, "items": self.num_items,
                "views": self.num_views, "dim": self.dim, "key_digest": self.key.digest() if self.key else None,
                "view_family": self.views.signature, "build_seconds": round(self.build_seconds, 1)}


# ----------------------------------------------------------------------------- building

def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None


@torch.no_grad()
def _embed_chunk(model: torch.nn.Module, images: torch.Tensor, start: int, views: ItemViews, num_views: int,
                 batch_size: int, device: torch.device) -> np.ndarray:
    parts = []
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    for v in range(num_views):
        rows = []
        for s in range(0, len(images), batch_size):
            x = images[s:s + batch_size].to(device, non_blocking=True)
            idx = torch.arange(start + s, start + s + len(x), device=device)
            x = views(x, idx, torch.full_like(idx, v)).float().div_(255)
            if amp is not None:
                with amp:
                    emb = model(x, normalize=False)
            else:
                emb = model(x, normalize=False)
            rows.append(torch.nn.functional.normalize(emb.float(), dim=1).to(torch.float16).cpu())
        parts.append(torch.cat(rows).numpy())
    return np.stack(parts, axis=1)


def build_bank(gallery, train_set: ImageSet, *, views: ItemViews, num_views: int, root: str | Path,
               device: torch.device | str = "cpu", batch_size: int = 1024, chunk_items: int = 8192,
               progress: bool = True, stop_after_chunks: int | None = None,
               fingerprint: str | None = None) -> GalleryBank:
    """Open the bank for (gallery, train_set, views, K) under `root`, building what is missing.

    `gallery` is a `FrozenGallery`. `stop_after_chunks` (tests) stops an unfinished build after
    that many newly written chunks and returns None, as an interruption would.
    """
    if num_views < 1:
        raise ConfigError(f"compat.bank.views: got {num_views}, expected >= 1")
    if chunk_items < 1 or batch_size < 1:
        raise ConfigError("compat.bank.chunk_items and compat.bank.batch_size: expected positive integers")
    device = torch.device(device)
    dim = int(gallery.meta.spec.embedding_dim)
    key = BankKey(gallery_model_id=gallery.model_id, data_fingerprint=fingerprint or data_fingerprint(train_set),
                  items=len(train_set), views=int(num_views),
                  view_family=json.dumps(views.signature, sort_keys=True), embedding_dim=dim)
    folder = Path(root) / key.digest()
    shape = (len(train_set), int(num_views), dim)
    done = _complete_bank(folder, key, shape, views, gallery.model_id)
    if done is not None:
        return done
    # (re)build: a foreign or stale folder content is discarded
    meta = _read_meta(folder)
    if meta is not None and meta.get("key") != key.to_dict():
        shutil.rmtree(folder, ignore_errors=True)
    try:
        return _build(gallery, train_set, views=views, num_views=num_views, folder=folder, key=key, shape=shape,
                      device=device, batch_size=batch_size, chunk_items=chunk_items, progress=progress,
                      stop_after_chunks=stop_after_chunks)
    except FileNotFoundError:
        # another process building the same bank finished first and removed the chunks it built from
        done = _complete_bank(folder, key, shape, views, gallery.model_id)
        if done is None:
            raise
        return done


def _complete_bank(folder: Path, key: BankKey, shape: tuple, views: ItemViews, model_id: str) -> GalleryBank | None:
    """The bank in `folder` if it is complete and of this key and shape, else None."""
    meta, final = _read_meta(folder), folder / ARRAY_FILE
    if meta is None or meta.get("key") != key.to_dict() or not meta.get("complete") or not final.is_file():
        return None
    array = np.load(final, mmap_mode="r")
    if tuple(array.shape) != shape or array.dtype != DTYPE:
        return None
    return GalleryBank(array, views, model_id, path=folder, key=key, build_seconds=float(meta.get("build_seconds", 0.0)))


def _build(gallery, train_set: ImageSet, *, views: ItemViews, num_views: int, folder: Path, key: BankKey,
           shape: tuple, device: torch.device, batch_size: int, chunk_items: int, progress: bool,
           stop_after_chunks: int | None) -> GalleryBank | None:
    final = folder / ARRAY_FILE
    dim = shape[2]
    chunks = folder / CHUNK_DIR
    chunks.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / META_FILE, {"format": BANK_FORMAT, "key": key.to_dict(), "shape": list(shape),
                                           "dtype": "float16", "complete": False})
    started = time.perf_counter()
    model = gallery.model.to(device)
    starts = list(range(0, len(train_set), chunk_items))
    written = 0
    for number, start in enumerate(starts):
        path = chunks / f"{start:010d}.npy"
        n = min(chunk_items, len(train_set) - start)
        if path.is_file():
            try:
                if np.load(path, mmap_mode="r").shape == (n, num_views, dim):
                    continue
            except (OSError, ValueError):
                pass  # a damaged chunk is recomputed
        part = _embed_chunk(model, train_set.images[start:start + n], start, views, num_views, batch_size, device)
        _atomic_save_npy(path, part)
        written += 1
        if progress:
            done = min(start + n, len(train_set))
            print(f"[bank] {folder.name}: {done}/{len(train_set)} images x {num_views} views "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        if stop_after_chunks is not None and written >= stop_after_chunks and number + 1 < len(starts):
            return None
    tmp = folder / f".{ARRAY_FILE}.{os.getpid()}.tmp"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=shape)
    for start in starts:
        part = np.load(chunks / f"{start:010d}.npy")
        out[start:start + len(part)] = part
    out.flush()
    del out
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    seconds = time.perf_counter() - started
    atomic_write_json(folder / META_FILE, {"format": BANK_FORMAT, "key": key.to_dict(), "shape": list(shape),
                                           "dtype": "float16", "complete": True, "build_seconds": round(seconds, 2)})
    shutil.rmtree(chunks, ignore_errors=True)
    return GalleryBank(np.load(final, mmap_mode="r"), views, gallery.model_id, path=folder, key=key,
                       build_seconds=seconds)


def bank_from_index(index_dir: str | Path, gallery_model_id: str, train_set: ImageSet, views: ItemViews, *,
                    embed_missing=None) -> GalleryBank:
    """A K = 1 bank from the stored vectors of a gallery index built from the training images
    (read through the index API, `hetsearch.index.gallery.read_stored`).

    Training items the index does not hold are an error, unless ``embed_missing`` is given: a
    callable (ImageSet of the missing items -> float array (M, D)) that embeds them with the gallery
    model (a catalogue refresh trains on the index's items plus the query model's own training
    images, most of which were never indexed)."""
    folder = Path(index_dir)
    stored = read_stored(folder)
    if stored.gallery_model_id != gallery_model_id:
        raise CompatibilityError(f"compat.bank.index={folder}: the index was built by gallery model "
                                 f"{stored.gallery_model_id}, not by compat.gallery_model "
                                 f"({gallery_model_id}); build a bank from the gallery model instead "
                                 "(leave compat.bank.index unset)")
    row_of_source = {source: row for row, source in enumerate(stored.sources) if source is not None}
    rows = np.asarray([row_of_source.get(s, -1) for s in train_set.sources], dtype=np.int64)
    missing = np.flatnonzero(rows < 0)
    if len(missing) and embed_missing is None:
        raise CompatibilityError(f"compat.bank.index={folder}: {len(missing)} of {len(rows)} training items are not "
                                 f"in the index (e.g. {train_set.sources[int(missing[0])]!r}); index the training "
                                 "images themselves (hetsearch index build --dataset <name>:train), set "
                                 "compat.bank.index_missing=embed, or leave compat.bank.index unset")
    picked = np.zeros((len(rows), stored.vectors.shape[1]), dtype=np.float32)
    found = rows >= 0
    picked[found] = stored.vectors[rows[found]]
    if len(missing):
        picked[missing] = np.asarray(embed_missing(train_set.subset(torch.from_numpy(missing))), dtype=np.float32)
    picked /= np.maximum(np.linalg.norm(picked, axis=1, keepdims=True), 1e-12)
    source = "index" if not len(missing) else f"index ({int(found.sum())} items) + gallery model ({len(missing)})"
    return GalleryBank(picked[:, None, :].astype(DTYPE), views, gallery_model_id, path=folder, source=source)
