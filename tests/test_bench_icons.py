"""bench/icons.py: the emoji folder is built from (fake) npm tarballs, and the project reads it as
intended: layout train/query/gallery, open set (the held-out emoji are new classes), gallery = the
official gallery split, transparency composited on the configured background. No npm here."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hetsearch.data import DataConfig, make_splits

_SPEC = importlib.util.spec_from_file_location("bench_icons", Path(__file__).resolve().parents[1] / "bench" / "icons.py")
icons = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_icons"] = icons   # dataclasses look their module up
_SPEC.loader.exec_module(icons)

CODEPOINTS = [f"1F6{i:02X}" for i in range(8)]


def _png(rgb: tuple[int, int, int], transparent_corner: bool = True) -> bytes:
    """A 64 px RGBA icon: a coloured disc-ish square, its corners transparent black."""
    a = np.zeros((64, 64, 4), dtype=np.uint8)
    a[8:56, 8:56, :3] = rgb
    a[8:56, 8:56, 3] = 255
    if not transparent_corner:
        a[..., 3] = 255
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _fake_package(path: Path, style: icons.Style, codepoints: list[str], missing: str | None = None) -> Path:
    """A tarball shaped like emoji-datasource-STYLE: package/emoji.json + package/img/STYLE/64/*.png."""
    table = [{"unified": c, "image": f"{c.lower()}.png", "short_name": f"emoji_{c}",
              style.has_flag: c != missing} for c in codepoints]
    tarball = path / style.tarball
    with tarfile.open(tarball, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add(icons.EMOJI_TABLE, json.dumps(table).encode())
        for i, c in enumerate(codepoints):
            shade = 40 if style.name == "google" else 200
            add(f"{style.image_dir}/{c.lower()}.png", _png((shade, 20 * i, 255 - 20 * i)))
    return tarball


@pytest.fixture()
def npm_dir(tmp_path: Path) -> Path:
    d = tmp_path / "npm"
    d.mkdir()
    _fake_package(d, icons.STYLES["google"], CODEPOINTS)
    _fake_package(d, icons.STYLES["twitter"], CODEPOINTS, missing=CODEPOINTS[-1])  # one emoji not drawn
    return d


def test_folder_from_tarballs(tmp_path: Path, npm_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(icons.shutil, "which", lambda name: None)   # no npm: the tarballs are there
    root = tmp_path / "data"
    manifest = icons.prepare(root, npm_dir, "twitter", ("google",), train_fraction=0.75, seed=0)
    # the emoji only one style draws is left out: 7 classes, 5 training (round(0.75 * 7)), 2 held out
    assert manifest["classes"] == 7 and manifest["train_classes"] == 5 and manifest["held_out_classes"] == 2
    train = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*.png"))
    query = sorted(p.relative_to(root).as_posix() for p in (root / "query").rglob("*.png"))
    gallery = sorted(p.relative_to(root).as_posix() for p in (root / "gallery").rglob("*.png"))
    assert len(train) == 10 and all(p.endswith(("/google.png", "/twitter.png")) for p in train)
    assert [p.split("/")[1] for p in query] == [p.split("/")[1] for p in gallery]   # the same held-out emoji
    assert all(p.endswith("/twitter.png") for p in query) and all(p.endswith("/google.png") for p in gallery)
    held_out = {p.split("/")[1] for p in query}
    assert not held_out & {p.split("/")[1] for p in train} and CODEPOINTS[-1] not in held_out
    assert manifest["short_names"][CODEPOINTS[0]] == f"emoji_{CODEPOINTS[0]}"
    # resumable: the same inputs keep the folder as it is; another seed rebuilds it
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert icons.prepare(root, npm_dir, "twitter", ("google",), seed=0) == manifest
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    other = icons.prepare(root, npm_dir, "twitter", ("google",), seed=1)
    assert other["seed"] == 1 and json.loads((root / "manifest.json").read_text())["seed"] == 1


def test_project_reads_the_folder_as_open_set(tmp_path: Path, npm_dir: Path) -> None:
    root = tmp_path / "data"
    icons.prepare(root, npm_dir, "twitter", ("google",), seed=0)
    cfg = DataConfig(source="image_folder", root=str(root), image_size=16, channels=3, resize="stretch",
                     background="white", val_fraction=0.0)
    splits = make_splits(cfg)
    p = splits.protocol
    assert p["protocol"] == "open_set" and p["gallery_mode"] == "gallery_split" and not splits.exclude_self
    assert p["layout"].startswith("ROOT/{train,query,gallery}")
    assert p["counts"] == {"train": 10, "val": 0, "query": 2, "gallery": 2}
    assert not set(splits.train_classes) & set(splits.test_classes)
    # transparency composited on the background, not the stored black
    corner = splits.query.images[:, :, 0, 0]
    assert (corner == 255).all()
    black = make_splits(DataConfig(**{**cfg.__dict__, "background": "black"}))
    assert (black.query.images[:, :, 0, 0] == 0).all()


def test_bad_styles_and_missing_npm(tmp_path: Path, monkeypatch) -> None:
    data = {"google": {"1F600": _png((1, 2, 3))}, "twitter": {"1F600": _png((1, 2, 3))}}
    with pytest.raises(icons.IconsError, match="distinct styles"):
        icons.build_icon_folder(tmp_path / "x", data, query_style="google", gallery_styles=["google"])
    with pytest.raises(icons.IconsError, match="at least 2"):
        icons.build_icon_folder(tmp_path / "x", data, query_style="twitter", gallery_styles=["google"])
    monkeypatch.setattr(icons.shutil, "which", lambda name: None)
    with pytest.raises(icons.IconsError, match="npm not found"):
        icons.fetch_packages([icons.STYLES["google"]], tmp_path / "empty")


def test_result_rows_from_a_grid() -> None:
    def pair(q: str, g: str, r1: float) -> dict:
        return {"query": q, "gallery": g, "query_model": q + "-id", "gallery_model": g + "-id", "homogeneous": q == g,
                "metrics": {}, "recall_at_1": r1, "map_at_r": r1, "map": r1, "compatible": None if q == g else False,
                "gap_to_paragon": r1 - 0.6, "query_mflops": 2.0 if q != "gallery" else 70.0,
                "gallery_mflops": 70.0 if g == "gallery" else 2.0, "flops_ratio": 1.0, "declared_compatible": True,
                "query_method": "bct" if q != "gallery" else "none"}
    grid = {"protocol": {"protocol": "open_set"},
            "models": [{"label": "gallery"}, {"label": "query_bct"}],
            "pairs": [pair("gallery", "gallery", 0.6), pair("gallery", "query_bct", 0.1),
                      pair("query_bct", "gallery", 0.2), pair("query_bct", "query_bct", 0.4)],
            "matrix": {"recall_at_1": [[0.6, 0.1], [0.2, 0.4]]}}
    info = {"query_bct": {"method": "BCT", "seed": 0, "epochs": 30}, "gallery": {"method": "independent", "epochs": 40}}
    rows = icons.result_rows(grid, info, "gallery")
    assert [(r["label"], r["gallery_label"]) for r in rows] == [
        ("gallery", "gallery"), ("query_bct", "gallery"), ("gallery", "query_bct"), ("query_bct", "query_bct")]
    assert rows[0]["method"] == "paragon" and rows[1]["method"] == "BCT"
    assert rows[1]["homo_recall_at_1"] == 0.4 and rows[1]["recall_at_1"] == 0.2 and rows[1]["protocol"] == "open_set"
    assert rows[2]["gap_to_paragon"] is None   # only pairs against the paragon have a gap to it
    assert "| query_bct | 0.2000 | 0.4000 |" in icons.matrix_markdown(grid)
