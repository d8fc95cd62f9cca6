"""The gallery embedding bank (hetsearch.compat.bank) and its deterministic views.

Tiny synthetic data (1x16x16 images), a width-4 ResNet-18 gallery: seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hetsearch.compat import bank as bank_module
from hetsearch.compat.bank import ARRAY_FILE, CHUNK_DIR, META_FILE, bank_from_index, build_bank
from hetsearch.compat.gallery import FrozenGallery
from hetsearch.compat.views import ItemViews
from hetsearch.data import ImageSet
from hetsearch.errors import CompatibilityError
from hetsearch.models import create_model, save_checkpoint

SIZE, DIM = 16, 8
CLASSES = ["a", "b", "c"]


def image_set(n: int = 20, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    images = torch.randint(0, 256, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return ImageSet(images=images, labels=labels, classes=list(CLASSES), sources=[f"syn:train:{i}" for i in range(n)])


def gallery(tmp_path, seed: int = 0) -> FrozenGallery:
    torch.manual_seed(seed)
    model = create_model("resnet18", num_classes=len(CLASSES), embedding_dim=DIM, in_chans=1, image_size=SIZE,
                         backbone_args={"width": 4}).eval()
    path = tmp_path / f"gallery{seed}.pt"
    save_checkpoint(path, model, classes=CLASSES, config={})
    return FrozenGallery.load(path)


# ----------------------------------------------------------------------------- views

def test_views_are_a_function_of_seed_item_and_view_only():
    images = image_set(12).images
    views = ItemViews(seed=3, crop_padding=2, hflip=True)
    idx = torch.arange(12)
    v = torch.tensor([0, 1, 2, 3] * 3)
    whole = views(images, idx, v)
    # the same item/view in another batch, in another order, gives the same pixels
    order = torch.tensor([5, 2, 11, 0])
    assert torch.equal(views(images[order], idx[order], v[order]), whole[order])
    assert torch.equal(whole[v == 0], images[v == 0])  # view 0 is the image as is
    many = views(images.repeat(8, 1, 1, 1), torch.arange(12).repeat(8), torch.arange(1, 97))
    assert len({hash(x.numpy().tobytes()) for x in many}) > 24  # augmented views differ
    other_seed = ItemViews(seed=4, crop_padding=2, hflip=True)(images, idx, v)
    assert not torch.equal(other_seed[v > 0], whole[v > 0])


# ----------------------------------------------------------------------------- building and keying

def test_bank_holds_the_gallery_embedding_of_each_view_and_is_reused(tmp_path, monkeypatch):
    g, train = gallery(tmp_path), image_set(20)
    views = ItemViews(seed=0, crop_padding=2)
    bank = build_bank(g, train, views=views, num_views=3, root=tmp_path / "banks", chunk_items=8, progress=False)
    assert bank.array.shape == (20, 3, DIM) and bank.array.dtype == np.float16
    assert isinstance(bank.array, np.memmap)  # opened with mmap_mode
    idx = torch.arange(20)
    for v in range(3):
        x = views(train.images, idx, torch.full_like(idx, v)).float() / 255
        expected = F.normalize(g.model(x, normalize=False).float(), dim=1)
        assert torch.allclose(torch.from_numpy(np.asarray(bank.array[:, v], dtype=np.float32)), expected, atol=2e-3)
    meta = json.loads((bank.path / META_FILE).read_text())
    assert meta["complete"] and meta["key"]["views"] == 3 and meta["key"]["gallery_model_id"] == g.model_id
    assert not (bank.path / CHUNK_DIR).exists()

    calls = []
    monkeypatch.setattr(bank_module, "_embed_chunk", lambda *a, **k: calls.append(1))
    again = build_bank(g, train, views=views, num_views=3, root=tmp_path / "banks", chunk_items=8, progress=False)
    assert again.path == bank.path and calls == []  # same key: opened, not rebuilt


def test_a_key_change_builds_another_bank(tmp_path):
    g, train = gallery(tmp_path), image_set(10)
    root = tmp_path / "banks"
    views = ItemViews(seed=0)
    base = build_bank(g, train, views=views, num_views=2, root=root, progress=False).path
    changed = {
        "views": build_bank(g, train, views=views, num_views=3, root=root, progress=False).path,
        "view seed": build_bank(g, train, views=ItemViews(seed=1), num_views=2, root=root, progress=False).path,
        "crop": build_bank(g, train, views=ItemViews(seed=0, crop_padding=4), num_views=2, root=root,
                           progress=False).path,
        "data": build_bank(g, image_set(10, seed=1), views=views, num_views=2, root=root, progress=False).path,
        "gallery": build_bank(gallery(tmp_path, seed=1), train, views=views, num_views=2, root=root,
                              progress=False).path,
    }
    assert len({base, *changed.values()}) == 6


def test_an_interrupted_build_resumes_from_its_chunks(tmp_path, monkeypatch):
    g, train = gallery(tmp_path), image_set(20)
    views, root = ItemViews(seed=0), tmp_path / "banks"
    assert build_bank(g, train, views=views, num_views=2, root=root, chunk_items=6, progress=False,
                      stop_after_chunks=2) is None
    folder = next(root.iterdir())
    assert len(list((folder / CHUNK_DIR).glob("*.npy"))) == 2 and not (folder / ARRAY_FILE).exists()
    assert not json.loads((folder / META_FILE).read_text())["complete"]
    starts = []
    original = bank_module._embed_chunk
    monkeypatch.setattr(bank_module, "_embed_chunk", lambda model, images, start, *a: starts.append(start)
                        or original(model, images, start, *a))
    resumed = build_bank(g, train, views=views, num_views=2, root=root, chunk_items=6, progress=False)
    assert starts == [12, 18]  # only the chunks that were missing
    fresh = build_bank(g, train, views=views, num_views=2, root=tmp_path / "fresh", chunk_items=6, progress=False)
    assert np.array_equal(np.asarray(resumed.array), np.asarray(fresh.array))


def test_a_build_that_another_process_finishes_first_returns_that_bank(tmp_path, monkeypatch):
    """Two benches building the same bank (the campaign and the paper study share runs/bench/banks): the one
    that finishes removes the chunks; the other, mid-build, must return the finished bank, not fail."""
    g, train = gallery(tmp_path), image_set(20)
    views, root = ItemViews(seed=0), tmp_path / "banks"
    original = bank_module._embed_chunk
    calls = []

    def other_process_finishes_meanwhile(model, images, start, *a):
        calls.append(start)
        if len(calls) == 2:   # this build is mid-way: the "other process" builds it all and cleans up
            monkeypatch.setattr(bank_module, "_embed_chunk", original)
            build_bank(g, train, views=views, num_views=2, root=root, chunk_items=6, progress=False)
        return original(model, images, start, *a)

    monkeypatch.setattr(bank_module, "_embed_chunk", other_process_finishes_meanwhile)
    bank = build_bank(g, train, views=views, num_views=2, root=root, chunk_items=6, progress=False)
    fresh = build_bank(g, train, views=views, num_views=2, root=tmp_path / "fresh", chunk_items=6, progress=False)
    assert np.array_equal(np.asarray(bank.array), np.asarray(fresh.array))
    assert not (bank.path / CHUNK_DIR).exists()


def test_a_gallery_index_of_the_same_images_serves_as_a_one_view_bank(tmp_path):
    from hetsearch.index import build_index
    from hetsearch.index.items import GalleryItems
    from hetsearch.models import load_checkpoint

    g, train = gallery(tmp_path), image_set(10)
    loaded = load_checkpoint(g.path)
    order = list(reversed(range(10)))  # the index may hold the items in any order
    items = GalleryItems(images=train.images[order], sources=[train.sources[i] for i in order],
                         labels=[CLASSES[int(train.labels[i])] for i in order], fields=[{} for _ in order])
    build_index(tmp_path / "idx", loaded, items)
    bank = bank_from_index(tmp_path / "idx", g.model_id, train, ItemViews())
    built = build_bank(g, train, views=ItemViews(), num_views=1, root=tmp_path / "banks", progress=False)
    assert bank.array.shape == (10, 1, DIM)
    assert np.allclose(np.asarray(bank.array, np.float32), np.asarray(built.array, np.float32), atol=2e-3)
    with pytest.raises(CompatibilityError, match="not by compat.gallery_model"):
        bank_from_index(tmp_path / "idx", "someone-else", train, ItemViews())
    more = image_set(12)
    with pytest.raises(CompatibilityError, match="not in the index"):
        bank_from_index(tmp_path / "idx", g.model_id, more, ItemViews())


def test_tabulated_view_parameters_equal_the_hash():
    images = image_set(12).images
    idx, v = torch.arange(12).repeat(3), torch.arange(3).repeat_interleave(12)
    hashed = ItemViews(seed=5, crop_padding=3)(images.repeat(3, 1, 1, 1), idx, v)
    tabled = ItemViews(seed=5, crop_padding=3)
    tabled.tabulate(12, 3, "cpu")
    assert torch.equal(tabled(images.repeat(3, 1, 1, 1), idx, v), hashed)
