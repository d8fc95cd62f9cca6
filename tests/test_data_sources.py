"""The data-set registry, image folder layouts, official splits, the validation-split decision,
alpha compositing and legacy data configs. Tiny generated images in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hetsearch.config import TrainRunConfig
from hetsearch.data import DataConfig, FileSet, list_datasets, load_raw, make_splits
from hetsearch.data.files import detect_layout
from hetsearch.data.transforms import fit_pil_image
from hetsearch.errors import ConfigError, DataError
from hetsearch.utils.typed_config import from_dict


def colour_images(folder: Path, classes, per_class: int, size: int = 12, offset: int = 0) -> None:
    """PNG files whose colour encodes the class (plus a little seeded noise)."""
    rng = np.random.default_rng(offset)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        base = np.array([hash(name) % 251, (hash(name) // 251) % 251, (hash(name) // 63001) % 251], dtype=np.int16)
        for i in range(per_class):
            pixels = np.clip(base + rng.integers(-20, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / name / f"{offset + i:03d}.png")


def test_registry_lists_builtins_and_rejects_unknown() -> None:
    assert {"fashion_mnist", "image_folder", "csv"} <= set(list_datasets())
    with pytest.raises(ConfigError, match="unknown data set 'imagenet'.*known: .*image_folder"):
        DataConfig(source="imagenet").validate()
    with pytest.raises(ConfigError, match=r"data.options \(image_folder\).*unknown key.*valid keys: layout"):
        DataConfig(source="image_folder", options={"layuot": "x"}).validate()
    with pytest.raises(ConfigError, match="data.options.layout"):
        DataConfig(source="image_folder", options={"layout": "flat"}).validate()
    cfg = DataConfig(source="csv").validate()
    assert cfg.options == {"path": None, "path_column": "path", "label_column": "label", "split_column": None}


def test_legacy_flat_keys_move_into_options() -> None:
    old = {"source": "csv", "csv_path": "a.csv", "download": False, "root": None}
    cfg = from_dict(DataConfig, old, "data")
    assert cfg.options["path"] == "a.csv"
    cfg = from_dict(DataConfig, {"source": "fashion_mnist", "download": True, "csv_path": None}, "data")
    assert cfg.options == {"download": True}
    with pytest.raises(ConfigError, match="data.csv_path: applies to data.source 'csv' only"):
        from_dict(DataConfig, {"source": "fashion_mnist", "csv_path": "x.csv"}, "data")
    # a whole run config of the old form (as stored in older checkpoints) still loads
    run = from_dict(TrainRunConfig, {"data": {"source": "fashion_mnist", "download": False, "csv_path": None}})
    assert run.data.options == {"download": False}


@pytest.mark.parametrize("layout,dirs", [
    ("class_folders", None),
    ("train_test", ("train", "test")),
    ("train_query_gallery", ("train", "query", "gallery")),
])
def test_layouts_recognised(tmp_path: Path, layout: str, dirs) -> None:
    root = tmp_path / "root"
    for d in dirs or ("",):
        colour_images(root / d, ("a", "b", "c"), 4)
    assert detect_layout(root) == layout
    raw = load_raw(DataConfig(source="image_folder", root=str(root), channels=3, image_size=8))
    assert set(raw.splits) == (set(dirs) if dirs else {"all"})
    assert raw.classes == ["a", "b", "c"] and all(isinstance(p, FileSet) for p in raw.splits.values())


def test_unlabelled_layout(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (9, 9), (i * 50, 0, 0)).save(root / f"{i}.png")
    raw = load_raw(DataConfig(source="image_folder", root=str(root), channels=3, image_size=8))
    assert raw.layout == "ROOT/*" and not raw.labelled and raw.splits["all"].labels.tolist() == [-1] * 3
    splits = make_splits(DataConfig(source="image_folder", root=str(root), channels=3, image_size=8))
    assert splits.protocol["protocol"] == "unlabelled" and len(splits.train) == 3 and splits.classes == []
    assert len(splits.val) == len(splits.query) == len(splits.gallery) == 0


def test_official_train_test_split_is_used_and_open_set_detected(tmp_path: Path, capsys) -> None:
    root = tmp_path / "faces"
    colour_images(root / "train", ("p1", "p2", "p3", "p4"), 6)
    colour_images(root / "test", ("p5", "p6"), 5, offset=100)   # new identities at test time
    cfg = DataConfig(source="image_folder", root=str(root), channels=3, image_size=8, val_fraction=0.25)
    splits = make_splits(cfg)
    p = splits.protocol
    assert p["protocol"] == "open_set" and p["layout"] == "ROOT/{train,test}/CLASS/*" and p["official_splits"]
    assert p["train_classes"] == ["p1", "p2", "p3", "p4"] and p["test_classes"] == ["p5", "p6"]
    assert len(splits.query) == 10 and splits.gallery is splits.query and splits.exclude_self  # nothing dropped
    assert len(splits.train) + len(splits.val) == 24
    assert all("/test/" in s for s in splits.query.sources) and all("/train/" in s for s in splits.train.sources)
    assert "layout ROOT/{train,test}/CLASS/*; open_set (2 of 2 test classes are new" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="data.protocol: 'closed_set'.*never occur in its training split"):
        make_splits(DataConfig(source="image_folder", root=str(root), channels=3, image_size=8, protocol="closed_set"))


def test_official_closed_set_and_query_gallery_splits(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    colour_images(root / "train", ("a", "b"), 6)
    colour_images(root / "query", ("a", "b"), 2, offset=50)
    colour_images(root / "gallery", ("a", "b"), 3, offset=80)
    splits = make_splits(DataConfig(source="image_folder", root=str(root), channels=3, image_size=8,
                                    val_fraction=0.0))
    assert splits.protocol["protocol"] == "closed_set" and splits.protocol["gallery_mode"] == "gallery_split"
    assert len(splits.query) == 4 and len(splits.gallery) == 6 and not splits.exclude_self
    assert all("/gallery/" in s for s in splits.gallery.sources)


def test_open_set_on_shared_official_classes_splits_classes(tmp_path: Path) -> None:
    root = tmp_path / "tt"
    colour_images(root / "train", ("a", "b", "c", "d"), 4)
    colour_images(root / "test", ("a", "b", "c", "d"), 2, offset=30)
    splits = make_splits(DataConfig(source="image_folder", root=str(root), channels=3, image_size=8,
                                    protocol="open_set", val_fraction=0.0))
    assert not set(splits.train_classes) & set(splits.test_classes)
    assert set(splits.query.labels.tolist()) == set(splits.test_classes)


def test_csv_split_column(tmp_path: Path) -> None:
    colour_images(tmp_path / "imgs", ("x", "y"), 4)
    rows = ["file,kind,part"] + [f"imgs/{c}/{i:03d}.png,{c},{'test' if i == 3 else 'train'}"
                                  for c in ("x", "y") for i in range(4)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    cfg = DataConfig(source="csv", root=str(tmp_path / "list.csv"), channels=3, image_size=8, val_fraction=0.0,
                     options={"path_column": "file", "label_column": "kind", "split_column": "part"})
    splits = make_splits(cfg)
    assert len(splits.query) == 2 and len(splits.train) == 6 and splits.protocol["official_splits"]


def test_unscorable_validation_split_is_skipped_with_a_warning(tmp_path: Path, capsys) -> None:
    # 10 images per class, val_fraction 0.1 -> one validation image per class: cannot be scored
    colour_images(tmp_path / "few", ("a", "b", "c"), 10)
    cfg = DataConfig(source="image_folder", root=str(tmp_path / "few"), channels=3, image_size=8, test_fraction=0.2)
    splits = make_splits(cfg)
    err = capsys.readouterr().err
    assert "data.val_fraction=0.1" in err and "runtime.eval_every=0" in err and "validation is skipped" in err
    assert len(splits.val) == 0 and len(splits.train) == 24  # the val items are trained on
    assert splits.protocol["val"].startswith("none")
    cfg.val_fraction = 0.3
    assert len(make_splits(cfg).val) == 7  # round(0.3 * 24)


def test_alpha_is_composited_on_the_background() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)          # fully transparent black ...
    rgba[:2, :, :] = (255, 0, 0, 255)                  # ... with an opaque red top half
    img = Image.fromarray(rgba, "RGBA")
    out = fit_pil_image(img, 3, 4, "stretch")
    assert out[:, 0, 0].tolist() == [255, 0, 0] and out[:, 3, 3].tolist() == [255, 255, 255]
    out = fit_pil_image(img, 3, 4, "stretch", background=(0, 128, 0))
    assert out[:, 3, 3].tolist() == [0, 128, 0]
    half = Image.fromarray(np.full((2, 2, 4), (0, 0, 0, 128), dtype=np.uint8), "RGBA")
    assert 120 <= int(fit_pil_image(half, 1, 2, "stretch")[0, 0, 0]) <= 135  # 50% black over white
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0, 9, 9, 9] + [0] * 762)
    palette.info["transparency"] = 0
    assert fit_pil_image(palette, 3, 2, "stretch")[:, 0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ConfigError, match="data.background"):
        DataConfig(background="no-such-colour").validate()


def test_fashion_mnist_root_holding_images_suggests_image_folder(tmp_path: Path) -> None:
    colour_images(tmp_path / "mine", ("a",), 1)
    with pytest.raises(DataError, match="set data.source=image_folder"):
        load_raw(DataConfig(root=str(tmp_path / "mine")))


def test_index_dataset_accepts_registered_sources(tmp_path: Path) -> None:
    from hetsearch.index.items import dataset_items

    colour_images(tmp_path / "r" / "train", ("a", "b"), 2)
    colour_images(tmp_path / "r" / "test", ("a", "b"), 2, offset=9)
    items = dataset_items("image_folder:test", 3, 8, root=str(tmp_path / "r"))
    assert len(items) == 4 and items.labels == ["a", "a", "b", "b"] and items.images.shape[1:] == (3, 8, 8)
    with pytest.raises(ConfigError, match="has splits train, test, not 'gallery'"):
        dataset_items("image_folder:gallery", 3, 8, root=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="not a registered data set"):
        dataset_items("imagenet:train", 3, 8)
    assert isinstance(torch.zeros(1), torch.Tensor)
