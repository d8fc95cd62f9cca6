"""Acceptance: your own colour images in ROOT/{train,test}/CLASS, from the templates in
configs/image_folder/ with no overrides but data.root: gallery model -> compatible query model ->
index of ROOT/train -> `evaluate --queries ROOT/test --index`, all through the CLI.

The templates' own settings run (30 epochs, 64 px); the generated set is tiny (3 classes, 8
training images each), so every epoch is one batch and the whole test takes a few tens of seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from hetsearch.cli import main

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def run(*args) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def write_colour_folder(root: Path, per_class: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(18, 30, 2)
                pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                if i % 3 == 0:  # some with transparency: composited on white, not dropped
                    alpha = np.full((h, w, 1), 255, dtype=np.uint8)
                    alpha[: h // 4] = 0
                    Image.fromarray(np.concatenate([pixels, alpha], axis=2), "RGBA").save(root / split / name / f"{i}.png")
                else:
                    Image.fromarray(pixels, "RGB").save(root / split / name / f"{i}.jpg", quality=90)


def test_own_images_from_folder_to_scored_index(tmp_path: Path, monkeypatch, capsys) -> None:
    root = tmp_path / "photos"
    write_colour_folder(root, {"train": 8, "test": 3}, seed=0)
    shutil.copytree(REPO / "configs" / "image_folder", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)   # the templates write runs/my_images/ under the working folder

    assert run("train", "configs/gallery.yaml", f"data.root={root}") == 0
    err = capsys.readouterr().err
    assert "layout ROOT/{train,test}/CLASS/*; closed_set" in err
    assert run("train", "configs/query.yaml", f"data.root={root}") == 0
    gallery, query = Path("runs/my_images/gallery/model.pt"), Path("runs/my_images/query/model.pt")
    assert gallery.is_file() and query.is_file()

    assert run("index", "build", "--gallery-model", gallery, "--images", root / "train", "--out", "idx",
               "--no-progress") == 0
    capsys.readouterr()
    assert run("evaluate", "--query-model", query, "--queries", root / "test", "--index", "idx", "--json",
               "--out", "metrics.json") == 0
    result = json.loads(capsys.readouterr().out)
    metrics = result["metrics"]
    assert metrics["num_queries"] == 9 and metrics["num_gallery"] == 24
    assert result["gallery_model"] != result["query_model"]
    assert metrics["recall_at_1"] > 1 / 3   # better than chance with 3 classes
    assert json.loads(Path("metrics.json").read_text())["metrics"] == metrics

    # and a served search starts from the same index: `query` with the test folder
    assert run("query", "--index", "idx", "--query-model", query, root / "test", "--k", "1", "--json") == 0
    hits = json.loads(capsys.readouterr().out)["queries"]
    assert len(hits) == 9
