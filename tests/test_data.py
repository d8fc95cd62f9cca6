"""Tests for hetsearch.data: IDX parsing, image loaders, protocols, augmentation, batching.

All fixtures are tiny and written to tmp_path; the one test on the real Fashion-MNIST files
is skipped when the Debian package is not installed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hetsearch.data import (
    FASHION_MNIST_CLASSES,
    DataConfig,
    ImageSet,
    count_batches,
    iterate_batches,
    load_source,
    make_splits,
)
from hetsearch.data.augment import BatchAugment
from hetsearch.data.fashion_mnist import debian_package_dir
from hetsearch.data.idx import encode_idx, parse_idx, read_idx
from hetsearch.errors import ConfigError, DataError

# ---------------------------------------------------------------- helpers


def write_fake_fashion_mnist(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> None:
    """Four tiny IDX files with the Fashion-MNIST names; pixel value encodes the label."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.repeat(labels[:, None, None] * 20, 28 * 28, axis=1).reshape(n, 28, 28).astype(np.uint8)
        for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = encode_idx(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


def make_image_folder(root: Path, per_class: int = 6, classes=("cat", "dog", "emu")) -> None:
    """PNG files of mixed modes and sizes, one sub-folder per class."""
    rng = np.random.default_rng(0)
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = 20 + 3 * i, 30 - 2 * i
            if i % 2:
                img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")
            else:
                img = Image.fromarray(np.full((h, w), 40 * ci, dtype=np.uint8), "L")
            img.save(root / name / f"{i:02d}.png")
    (root / classes[0] / "notes.txt").write_text("not an image, ignored")


def fake_cfg(tmp_path: Path, **kw) -> DataConfig:
    folder = tmp_path / "fmnist"
    if not folder.exists():
        write_fake_fashion_mnist(folder, n_train=200, n_test=100)
    return DataConfig(source="fashion_mnist", root=str(folder), **kw)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = encode_idx(array)
    assert data[:4] == b"\x00\x00\x08\x03"
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path, expected_ndim=3)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)
    ints = np.array([1, -2, 70000], dtype=np.int32)
    np.testing.assert_array_equal(parse_idx(encode_idx(ints)), ints)


def test_idx_corrupt_names_file(tmp_path: Path) -> None:
    good = encode_idx(np.zeros((3, 4, 4), dtype=np.uint8))
    cases = {
        "bad_magic": b"\x01\x02" + good[2:],
        "truncated": good[:-5],
        "trailing": good + b"\x00",
        "bad_type": b"\x00\x00\x42\x03" + good[4:],
        "tiny": b"\x00\x00",
        "bad_gzip": gzip.compress(good)[:20],
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.gz"
        path.write_bytes(data)
        with pytest.raises(DataError, match=name):
            read_idx(path)
    path = tmp_path / "dims.idx"
    path.write_bytes(good)
    with pytest.raises(DataError, match="dims.idx.*dimensions"):
        read_idx(path, expected_ndim=1)


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_user_folder(tmp_path: Path, gz: bool) -> None:
    write_fake_fashion_mnist(tmp_path / "fm", gz=gz)
    raw = load_source(DataConfig(root=str(tmp_path / "fm")))
    assert set(raw) == {"train", "test"}
    train = raw["train"]
    assert train.images.shape == (40, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.classes == FASHION_MNIST_CLASSES
    assert torch.equal(train.images[:, 0, 0, 0].long(), train.labels * 20)
    assert train.sources[3] == "fashion_mnist:train:3" and len(raw["test"]) == 20


def test_fashion_mnist_torchvision_layout_and_resize(tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path / "tv" / "FashionMNIST" / "raw")
    raw = load_source(DataConfig(root=str(tmp_path / "tv"), channels=3, image_size=32))
    assert raw["test"].images.shape == (20, 3, 32, 32)
    # constant images stay constant after resizing and channel repetition
    assert torch.equal(raw["test"].images[:, :, 5, 5].long(), raw["test"].labels[:, None].expand(-1, 3) * 20)


def test_fashion_mnist_missing_gives_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_source(DataConfig(root=str(tmp_path / "nowhere")))
    message = str(info.value)
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "data.root=" in message and "data.download=true" in message
    assert str(tmp_path / "nowhere") in message


def test_fashion_mnist_download_failure_is_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError, match="downloading Fashion-MNIST.*no network"):
        load_source(DataConfig(root=str(tmp_path / "dl"), options={"download": True}))


def test_fashion_mnist_mismatched_counts(tmp_path: Path) -> None:
    folder = tmp_path / "fm"
    write_fake_fashion_mnist(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(np.zeros(7, dtype=np.uint8))))
    with pytest.raises(DataError, match="t10k-labels"):
        load_source(DataConfig(root=str(folder)))


@pytest.mark.skipif(debian_package_dir() is None, reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    splits = make_splits(DataConfig(max_train_items=200, max_test_items=100))
    assert splits.num_classes == 10 and splits.classes == FASHION_MNIST_CLASSES
    assert splits.train.images.shape[1:] == (1, 28, 28)
    assert len(splits.train) + len(splits.val) == 200 and len(splits.query) == 100
    assert splits.query.sources[0].startswith("fashion_mnist:test:")
    assert 0 < int(splits.train.images.float().mean()) < 255


# ---------------------------------------------------------------- user images


def test_image_folder_shapes_labels_classes(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "imgs")
    for channels in (1, 3):
        raw = load_source(DataConfig(source="image_folder", root=str(tmp_path / "imgs"), channels=channels, image_size=16))
        ims = raw["all"]
        assert ims.classes == ["cat", "dog", "emu"]
        assert ims.images.shape == (18, channels, 16, 16) and ims.images.dtype == torch.uint8
        assert ims.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
        assert ims.sources[0].endswith("cat/00.png") and ims.skipped == []
    # greyscale constant images keep their value (40 * class index) through crop/resize
    grey = ims.images[ims.labels == 2][0]
    assert int(grey.min()) == int(grey.max()) == 80
    stretched = load_source(
        DataConfig(source="image_folder", root=str(tmp_path / "imgs"), image_size=8, resize="stretch")
    )["all"]
    assert stretched.images.shape == (18, 1, 8, 8)


def test_image_folder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.root"):
        load_source(DataConfig(source="image_folder"))
    with pytest.raises(DataError, match="not found"):
        load_source(DataConfig(source="image_folder", root=str(tmp_path / "nope")))


def test_csv_loader_relative_and_absolute_paths(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "imgs", per_class=2)
    (tmp_path / "meta").mkdir()
    rows = ["path,label", "../imgs/cat/00.png,10", "../imgs/cat/01.png,2", f"{tmp_path / 'imgs/dog/00.png'},2"]
    csv_file = tmp_path / "meta" / "list.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    ims = load_source(DataConfig(source="csv", options={"path": str(csv_file)}, channels=3, image_size=12))["all"]
    assert ims.classes == ["2", "10"]  # numeric names sort by value
    assert ims.labels.tolist() == [1, 0, 0]
    assert ims.images.shape == (3, 3, 12, 12)
    assert Path(ims.sources[0]).resolve() == (tmp_path / "imgs/cat/00.png").resolve()


def test_csv_bad_header(tmp_path: Path) -> None:
    csv_file = tmp_path / "x.csv"
    csv_file.write_text("file,class\na.png,1\n")
    with pytest.raises(DataError, match="x.csv.*header"):
        load_source(DataConfig(source="csv", options={"path": str(csv_file)}))
    with pytest.raises(ConfigError, match="data.options.path"):
        load_source(DataConfig(source="csv"))


def test_bad_image_fail_and_skip(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "imgs", per_class=3)
    bad = tmp_path / "imgs" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    cfg = DataConfig(source="image_folder", root=str(tmp_path / "imgs"), image_size=8)
    with pytest.raises(DataError) as info:
        load_source(cfg)
    assert str(bad) in str(info.value) and "on_bad_image" in str(info.value)
    cfg.on_bad_image = "skip"
    ims = load_source(cfg)["all"]
    assert ims.skipped == [str(bad)] and len(ims) == 9
    splits = make_splits(cfg)
    assert splits.skipped == [str(bad)] and splits.protocol["skipped_images"] == 1


# ---------------------------------------------------------------- protocols


def _ids(ims: ImageSet) -> set[str]:
    return set(ims.sources)


def test_closed_set_fashion_mnist(tmp_path: Path) -> None:
    splits = make_splits(fake_cfg(tmp_path, val_fraction=0.2))
    assert len(splits.train) == 160 and len(splits.val) == 40 and len(splits.query) == 100
    assert not _ids(splits.train) & _ids(splits.val)
    # the gallery is the whole training split: train and val items, nothing from the test split
    assert _ids(splits.gallery) == _ids(splits.train) | _ids(splits.val) and not splits.exclude_self
    assert all(s.startswith("fashion_mnist:test:") for s in splits.query.sources)
    assert torch.bincount(splits.val.labels, minlength=10).tolist() == [4] * 10  # stratified
    assert splits.protocol["counts"] == {"train": 160, "val": 40, "query": 100, "gallery": 200}


def test_open_set_disjoint_classes(tmp_path: Path) -> None:
    splits = make_splits(fake_cfg(tmp_path, protocol="open_set", open_set_train_fraction=0.6))
    train_cls = set(splits.train.labels.tolist()) | set(splits.val.labels.tolist())
    test_cls = set(splits.query.labels.tolist()) | set(splits.gallery.labels.tolist())
    assert train_cls == set(splits.train_classes) and len(train_cls) == 6
    assert test_cls == set(splits.test_classes) and not train_cls & test_cls
    assert splits.exclude_self and splits.gallery is splits.query
    assert splits.protocol["gallery_mode"] == "test_rest"
    assert splits.num_classes == 10  # labels index the full list
    with pytest.raises(ConfigError, match="data.gallery"):
        make_splits(fake_cfg(tmp_path, protocol="open_set", gallery="train"))


def test_user_data_closed_and_open(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "imgs", per_class=10, classes=("a", "b", "c", "d"))
    base = dict(source="image_folder", root=str(tmp_path / "imgs"), image_size=8)
    closed = make_splits(DataConfig(**base, test_fraction=0.2, val_fraction=0.25))
    assert len(closed.query) == 8 and len(closed.val) == 8 and len(closed.train) == 24
    assert not (_ids(closed.query) & (_ids(closed.train) | _ids(closed.val)))
    opened = make_splits(DataConfig(**base, protocol="open_set"))
    assert not set(opened.train_classes) & set(opened.test_classes)
    assert len(opened.query) == 20 and set(opened.query.labels.tolist()) == set(opened.test_classes)


def test_splits_seeded(tmp_path: Path) -> None:
    def key(seed: int) -> tuple:
        s = make_splits(fake_cfg(tmp_path, protocol="open_set", seed=seed, max_test_items=50))
        return tuple(s.train_classes), tuple(s.val.sources), tuple(s.query.sources)

    assert key(0) == key(0)
    assert key(0) != key(1)


def test_max_items_caps(tmp_path: Path) -> None:
    splits = make_splits(fake_cfg(tmp_path, max_train_items=50, max_test_items=30, val_fraction=0.1))
    assert len(splits.train) + len(splits.val) == 50 and len(splits.query) == 30
    assert splits.protocol["caps"]["max_train_items"] == 50


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="data.channels"):
        DataConfig(channels=2).validate()
    with pytest.raises(ConfigError, match="data.source"):
        DataConfig(source="imagenet").validate()
    assert DataConfig(protocol="open_set").resolved_gallery() == "test_rest"
    assert DataConfig().resolved_gallery() == "train"


def test_imageset_subset() -> None:
    ims = ImageSet(
        images=torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous(),
        labels=torch.tensor([0, 1, 0, 1]),
        classes=["x", "y"],
        sources=["a", "b", "c", "d"],
    )
    sub = ims.subset([3, 1])
    assert len(sub) == 2 and sub.sources == ["d", "b"] and sub.labels.tolist() == [1, 1]
    assert ims.subset(torch.tensor([True, False, True, False])).sources == ["a", "c"]
    with pytest.raises(ValueError):
        ImageSet(images=torch.zeros(2, 1, 2, 2), labels=torch.zeros(2, dtype=torch.int64), classes=["x"], sources=["a", "b"])


# ---------------------------------------------------------------- augmentation


def test_augment_shape_dtype_and_determinism() -> None:
    x = torch.randint(0, 256, (16, 3, 10, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = BatchAugment(crop_padding=3, hflip=True)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every output is a padded-and-cropped (maybe flipped) copy: some sample differs from input
    assert not torch.equal(a, x)


def test_augment_identity_and_flip() -> None:
    x = torch.randint(0, 256, (8, 1, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(BatchAugment(crop_padding=0, hflip=False)(x, torch.Generator()), x)
    flipped = BatchAugment(crop_padding=0, hflip=True)(x, torch.Generator().manual_seed(0))
    is_flipped = [torch.equal(f, s.flip(-1)) for f, s in zip(flipped, x)]
    is_same = [torch.equal(f, s) for f, s in zip(flipped, x)]
    assert all(fl or sa for fl, sa in zip(is_flipped, is_same))
    assert any(is_flipped) and any(is_same)  # per-sample decisions


def test_augment_crop_is_shift_with_zero_padding() -> None:
    x = torch.full((64, 1, 4, 4), 200, dtype=torch.uint8)
    out = BatchAugment(crop_padding=2, hflip=False)(x, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {0, 200}
    # each sample keeps a (4-|dy|) x (4-|dx|) block of the original value
    kept = (out == 200).flatten(1).sum(1)
    assert kept.max() == 16 and kept.min() >= 4 and kept.float().std() > 0


def test_augment_random_erasing_is_one_rectangle_per_erased_sample() -> None:
    # a constant image: every pixel that changed was erased (noise equal to 0 is vanishingly rare)
    x = torch.zeros((400, 2, 20, 20), dtype=torch.uint8)
    aug = BatchAugment(crop_padding=0, hflip=False, erase_prob=0.5, erase_area=(0.05, 0.2))
    out = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(3)))  # seeded
    changed = out != 0
    erased = changed.flatten(1).any(1)
    assert 0.4 < erased.float().mean() < 0.6  # ~erase_prob of the samples
    for mask in changed[erased].any(1):  # one rectangle across all channels
        rows, cols = mask.any(1).nonzero().view(-1), mask.any(0).nonzero().view(-1)
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        # a filled rectangle (up to the rare noise value 0) covering at most 20% (+ rounding)
        assert box.float().mean() > 0.97 and box.numel() <= 0.2 * 400 * 1.25
    with pytest.raises(ValueError, match="erase_prob"):
        BatchAugment(crop_padding=2, erase_prob=1.5)
    with pytest.raises(ValueError, match="erase_area"):
        BatchAugment(crop_padding=2, erase_area=(0.3, 0.1))


# ---------------------------------------------------------------- batching


def test_iterate_batches_single_rank() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    labels = torch.arange(10)
    batches = list(iterate_batches(images, labels, 3, torch.Generator().manual_seed(0)))
    assert len(batches) == 3 == count_batches(10, 3)
    seen = torch.cat([lab for _, lab in batches])
    assert len(set(seen.tolist())) == 9
    assert all(torch.equal(im.view(-1).long(), lab) for im, lab in batches)
    ordered = list(iterate_batches(images, labels, 4, None, shuffle=False, drop_last=False))
    assert [lab.tolist() for _, lab in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_iterate_batches_shards_disjoint() -> None:
    n, world = 23, 3
    images = torch.zeros(n, 1, 1, 1, dtype=torch.uint8)
    labels = torch.arange(n)
    shards = []
    for rank in range(world):
        gen = torch.Generator().manual_seed(42)  # same state on every rank
        batches = list(iterate_batches(images, labels, 2, gen, rank=rank, world_size=world))
        assert len(batches) == count_batches(n, 2, world_size=world) == 3
        shards.append(set(torch.cat([lab for _, lab in batches]).tolist()))
    for i in range(world):
        for j in range(i + 1, world):
            assert not shards[i] & shards[j]
    # without drop_last: padded to equal shards, union covers everything
    lengths, union = [], set()
    for rank in range(world):
        batches = list(
            iterate_batches(images, labels, 4, torch.Generator().manual_seed(42), drop_last=False, rank=rank, world_size=world)
        )
        lengths.append(len(batches))
        union |= set(torch.cat([lab for _, lab in batches]).tolist())
    assert len(set(lengths)) == 1 and union == set(range(n))
    with pytest.raises(ValueError):
        iterate_batches(images, labels, 2, None, rank=3, world_size=3)
