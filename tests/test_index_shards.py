"""Sharded index build under torchrun: the same index as one process, parts reused on resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hetsearch.index import GalleryItems
from hetsearch.index.gallery import read_stored
from hetsearch.index.shards import Shard, _embed_part, merge_parts, shards_dir, write_part
from index_fixtures import make_tiny_models, write_image_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (7, 2), (10, 3), (12, 4)])
def test_shards_cover_the_items_contiguously_in_order(n, world):
    bounds = [Shard(rank, world).bounds(n) for rank in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def _items(n: int, start: int) -> GalleryItems:
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 3, 4, 4) + start
    return GalleryItems(images=images, sources=[f"f{start + i}" for i in range(n)], labels=["a"] * n,
                        origin={"kind": "test"})


def test_parts_merge_in_rank_order_and_matching_parts_are_reused(tmp_path):
    root = shards_dir(tmp_path / "idx")
    parts = [_items(3, 0), _items(2, 3)]
    for rank, items in enumerate(parts):
        write_part(root / Shard(rank, 2).name, {"k": rank}, items, np.full((len(items), 5), rank, np.float32))
    items, vectors = merge_parts(root, 2)
    assert items.sources == ["f0", "f1", "f2", "f3", "f4"] and items.origin["shards"] == 2
    assert torch.equal(items.images, torch.cat([p.images for p in parts]))
    assert vectors.shape == (5, 5) and vectors[:3].max() == 0 and vectors[3:].min() == 1

    calls = []
    load = lambda shard: calls.append(shard) or _items(3, 0)  # noqa: E731
    embed = lambda items: np.zeros((len(items), 5), np.float32)  # noqa: E731
    _embed_part(root / Shard(0, 2).name, {"k": 0}, Shard(0, 2), load, embed)
    assert calls == []                                   # same key: the part from the earlier run is reused
    _embed_part(root / Shard(0, 2).name, {"k": "other gallery"}, Shard(0, 2), load, embed)
    assert calls == [Shard(0, 2)]                        # another key: embedded again


def _build(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "hetsearch.cli", "index", "build", *args, "--no-progress", "--device", "cpu"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_torchrun_build_equals_the_one_process_build(tmp_path):
    models = make_tiny_models(tmp_path / "models")
    write_image_folder(tmp_path / "imgs", n=11)
    common = ["--gallery-model", str(models.gallery), "--images", str(tmp_path / "imgs")]
    one = _build([*common, "--out", str(tmp_path / "one")], 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _build([*common, "--out", str(tmp_path / "two")], 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "from 2 processes" in two.stdout and not shards_dir(tmp_path / "two").exists()

    a, b = read_stored(tmp_path / "one"), read_stored(tmp_path / "two")
    assert len(a.ids) == len(b.ids) == 11
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.sources == b.sources and a.labels == b.labels          # the one-process item order
    np.testing.assert_array_equal(a.thumbnails, b.thumbnails)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)    # other batch sizes: float round-off only
    assert b.manifest["item_count"] == 11 and b.manifest["gallery_model_id"] == a.manifest["gallery_model_id"]


def test_torchrun_build_refuses_an_existing_index_on_every_process(tmp_path):
    models = make_tiny_models(tmp_path / "models")
    write_image_folder(tmp_path / "imgs", n=5)
    (tmp_path / "idx").mkdir()
    result = _build(["--gallery-model", str(models.gallery), "--images", str(tmp_path / "imgs"),
                     "--out", str(tmp_path / "idx")], 2)
    assert result.returncode != 0
    assert result.stderr.count("idx: already exists") == 2     # each process, one line, before embedding
    assert str(ROOT / "src") not in result.stderr               # no traceback from our code (torchrun adds its own)
