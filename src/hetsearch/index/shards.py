"""Building one index with several processes (`torchrun ... hetsearch index build`): embed in shards, merge.

Each process decodes and embeds one contiguous slice of the gallery items (`Shard.bounds`) and
writes it as a part folder next to the index (``OUT.shards/part-R-of-W``: vectors, thumbnails,
item metadata; written to a temporary folder, then renamed, so a part is complete or absent).
Rank 0 then concatenates the parts in rank order, which is the item order of a one-process build,
and writes the index with `build_index`. Parts whose key (gallery model, item source, shard) matches
are reused, so a build killed after embedding resumes at the merge. A failure in any process is
reported by every process (one line naming the rank), instead of leaving the others waiting.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from hetsearch.errors import HetsearchError
from hetsearch.index.items import GalleryItems
from hetsearch.models.checkpoint import LoadedModel
from hetsearch.utils.io import atomic_write_json
from hetsearch.utils.process_group import DistContext, barrier

PART_ITEMS = "items.json"
STREAM_ABOVE_GB = 2.0  # merged thumbnails larger than this go to a disk-backed array, not RAM


@dataclass(frozen=True)
class Shard:
    rank: int
    world_size: int

    def bounds(self, n: int) -> tuple[int, int]:
        """``[start, stop)`` of this shard among ``n`` items: contiguous, sizes differ by at most one."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def select(self, n: int) -> slice:
        return slice(*self.bounds(n))

    @property
    def name(self) -> str:
        return f"part-{self.rank}-of-{self.world_size}"


def shards_dir(out: Path) -> Path:
    return out.with_name(out.name + ".shards")


def _part_key(gallery: LoadedModel, source_key: str, shard: Shard) -> dict:
    return {"gallery_model_id": gallery.meta.model_id, "source": source_key, "shard": shard.name}


def _read_part(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PART_ITEMS).read_text())
    except (OSError, ValueError):
        return None


def write_part(folder: Path, key: dict, items: GalleryItems, vectors: np.ndarray) -> None:
    """The shard's vectors, thumbnails and item metadata, complete or not at all."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    np.save(tmp / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    np.save(tmp / "images.npy", items.images.numpy())
    atomic_write_json(tmp / PART_ITEMS, {"key": key, "count": len(items), "sources": items.sources,
                                         "labels": items.labels, "fields": items.fields,
                                         "skipped": items.skipped, "origin": items.origin})
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _empty_images(shape: tuple[int, ...]) -> np.ndarray:
    """uint8 array of ``shape``: in memory, or on an unlinked temporary file when large (the OS pages it)."""
    if int(np.prod(shape)) <= STREAM_ABOVE_GB * 1e9:
        return np.empty(shape, dtype=np.uint8)
    handle, name = tempfile.mkstemp(suffix=".npy", prefix="hetsearch-merge-")
    os.close(handle)
    array = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=shape)
    os.unlink(name)
    return array


def merge_parts(root: Path, world_size: int) -> tuple[GalleryItems, np.ndarray]:
    """All parts, in rank order, as one item list and one (N, D) vector array."""
    metas = [_read_part(root / Shard(r, world_size).name) for r in range(world_size)]
    arrays = [(np.load(root / Shard(r, world_size).name / "vectors.npy"),
               np.load(root / Shard(r, world_size).name / "images.npy", mmap_mode="r")) for r in range(world_size)]
    total = sum(len(v) for v, _ in arrays)
    images = _empty_images((total, *arrays[0][1].shape[1:]))
    start = 0
    for _, part_images in arrays:
        images[start:start + len(part_images)] = part_images
        start += len(part_images)
    items = GalleryItems(images=torch.from_numpy(images), sources=[s for m in metas for s in m["sources"]],
                         labels=[x for m in metas for x in m["labels"]], fields=[f for m in metas for f in m["fields"]],
                         skipped=[s for m in metas for s in m["skipped"]],
                         origin={**metas[0]["origin"], "shards": world_size})
    return items, np.concatenate([v for v, _ in arrays])


def _agreed(ctx: DistContext, step: Callable[[], Any]) -> Any:
    """``step()`` on this process; every process learns whether any failed and raises the first failure
    (naming its rank), so none is left waiting for a process that died."""
    error, unexpected, result = None, None, None
    try:
        result = step()
    except HetsearchError as exc:
        error = str(exc)
    except Exception as exc:  # a bug: release the other processes, then show its traceback here
        error, unexpected = f"{type(exc).__name__}: {exc}", exc
    errors: list = [None] * ctx.world_size
    dist.all_gather_object(errors, error)
    if unexpected is not None:
        raise unexpected
    failed = [(rank, e) for rank, e in enumerate(errors) if e]
    if failed:
        rank, message = failed[0]
        raise HetsearchError(message if rank == ctx.rank else f"process {rank} failed: {message}")
    return result


def _embed_part(folder: Path, key: dict, shard: Shard, load_items: Callable[[Shard], GalleryItems],
                embed: Callable[[GalleryItems], np.ndarray]) -> None:
    done = _read_part(folder)
    if done and done.get("key") == key:
        return  # resumed: embedded by an earlier run
    items = load_items(shard)
    write_part(folder, key, items, embed(items))


def _merge_and_build(root: Path, world_size: int, build: Callable[[GalleryItems, np.ndarray], dict]) -> dict:
    items, vectors = merge_parts(root, world_size)
    manifest = build(items, vectors)
    shutil.rmtree(root)
    return manifest


def build_sharded(ctx: DistContext, out: Path, gallery: LoadedModel, source_key: str,
                  load_items: Callable[[Shard], GalleryItems], embed: Callable[[GalleryItems], np.ndarray],
                  build: Callable[[GalleryItems, np.ndarray], dict]) -> dict | None:
    """Embed this process's shard of the items; rank 0 merges the parts and ``build``s the index.

    Returns the manifest on rank 0, None on the others."""
    shard = Shard(ctx.rank, ctx.world_size)
    root = shards_dir(out)
    _agreed(ctx, lambda: _embed_part(root / shard.name, _part_key(gallery, source_key, shard), shard,
                                     load_items, embed))
    manifest = _agreed(ctx, lambda: _merge_and_build(root, ctx.world_size, build) if ctx.is_main else None)
    barrier(ctx)
    return manifest
