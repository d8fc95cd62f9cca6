"""data.val_classes: a class-disjoint validation split for the open set (issue 20: choices made on
validation only). Some training classes leave training; all their images are the validation split."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from hetsearch.data import DataConfig, make_splits
from hetsearch.data.idx import encode_idx
from hetsearch.errors import ConfigError, DataError


def _fake_fashion_mnist(tmp_path: Path, n_train: int = 200, n_test: int = 100) -> str:
    """Tiny IDX files with the Fashion-MNIST names (pixel value encodes the label), 10 classes."""
    folder = tmp_path / "fmnist"
    folder.mkdir(exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.repeat(labels[:, None, None] * 20, 28 * 28, axis=1).reshape(n, 28, 28).astype(np.uint8)
        for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            (folder / f"{name}.gz").write_bytes(gzip.compress(encode_idx(array)))
    return str(folder)


def _classes(*sets) -> set[int]:
    return {c for s in sets for c in s.labels.tolist()}


def test_val_classes_are_disjoint_from_train_and_test_classes(tmp_path):
    splits = make_splits(DataConfig(root=_fake_fashion_mnist(tmp_path), protocol="open_set", val_classes=2))
    train, val, test = _classes(splits.train), _classes(splits.val), _classes(splits.query, splits.gallery)
    assert len(val) == 2 and len(train) == 3 and len(test) == 5
    assert not train & val and not val & test and not train & test
    assert set(splits.train_classes) == train          # the recorded training classes exclude validation ones
    assert len(splits.val) == 40                        # every image of the 2 classes (20 each)
    names = splits.protocol["val_classes"]
    assert sorted(splits.classes.index(n) for n in names) == sorted(val)
    assert "held-out training classes" in splits.protocol["val"]
    assert splits.protocol["counts"]["train"] + splits.protocol["counts"]["val"] == 100


def test_val_classes_fraction_seeded_and_independent_of_the_test_classes(tmp_path):
    root = _fake_fashion_mnist(tmp_path)
    off = make_splits(DataConfig(root=root, protocol="open_set"))
    on = make_splits(DataConfig(root=root, protocol="open_set", val_classes=0.4))  # 0.4 x 5 = 2 classes
    assert on.test_classes == off.test_classes          # the test classes do not move
    assert len(_classes(on.val)) == 2
    again = make_splits(DataConfig(root=root, protocol="open_set", val_classes=0.4))
    assert again.val.sources == on.val.sources
    other = {tuple(sorted(_classes(make_splits(DataConfig(root=root, protocol="open_set", val_classes=2,
                                                          seed=s)).val))) for s in range(6)}
    assert len(other) > 1                               # seeded: another seed, other classes


def test_default_keeps_the_stratified_item_validation(tmp_path):
    splits = make_splits(DataConfig(root=_fake_fashion_mnist(tmp_path), protocol="open_set", val_fraction=0.2))
    assert _classes(splits.val) == _classes(splits.train) == set(splits.train_classes)
    assert "val_classes" not in splits.protocol


@pytest.mark.parametrize("value", [-1, 1.5, True, "two"])
def test_bad_values_are_one_line_errors(value):
    with pytest.raises(ConfigError, match="data.val_classes"):
        DataConfig(protocol="open_set", val_classes=value).validate()


def test_closed_set_and_too_many_classes_are_refused(tmp_path):
    root = _fake_fashion_mnist(tmp_path)
    with pytest.raises(ConfigError, match="data.val_classes.*closed_set"):
        DataConfig(root=root, protocol="closed_set", val_classes=2).validate()
    with pytest.raises(ConfigError, match="data.val_classes.*closed_set"):  # auto resolves to the closed set
        make_splits(DataConfig(root=root, val_classes=2))
    with pytest.raises(ConfigError, match="at least one must stay"):
        make_splits(DataConfig(root=root, protocol="open_set", val_classes=5))


def test_single_image_validation_classes_are_refused(tmp_path):
    root = _fake_fashion_mnist(tmp_path, n_train=10)  # one image per class
    with pytest.raises(DataError, match="data.val_classes"):
        make_splits(DataConfig(root=root, protocol="open_set", val_classes=1))
