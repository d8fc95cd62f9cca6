"""Tests for the compatibility grid, the model contract and `hetsearch grid`, on tiny synthetic models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hetsearch.compat.cli import split_models_and_overrides
from hetsearch.data import ImageSet, Splits
from hetsearch.errors import CompatibilityError, ConfigError
from hetsearch.eval.grid import model_label, run_grid
from hetsearch.models import create_model, load_checkpoint, save_checkpoint
from hetsearch.models.contract import check_pair, declared_compatible

CLASSES = ["a", "b", "c"]
SIZE = 16


def tiny(seed: int, dim: int = 8):
    torch.manual_seed(seed)
    return create_model("resnet18", num_classes=len(CLASSES), embedding_dim=dim, in_chans=1, image_size=SIZE,
                        backbone_args={"width": 4}).eval()


def save(path: Path, seed: int, dim: int = 8, compatible_with: str | None = None, config: dict | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, tiny(seed, dim), classes=CLASSES, compatible_with=compatible_with,
                           compatibility="bct" if compatible_with else "none", config=config or {})


def synthetic_splits(exclude_self: bool = False) -> Splits:
    g = torch.Generator().manual_seed(0)

    def make(n_per_class: int) -> ImageSet:
        labels = torch.arange(len(CLASSES)).repeat_interleave(n_per_class)
        images = (labels[:, None, None, None] * 80 + torch.randint(0, 40, (len(labels), 1, SIZE, SIZE), generator=g))
        return ImageSet(images.to(torch.uint8), labels, list(CLASSES), [f"s:{i}" for i in range(len(labels))])

    query = make(4)
    gallery = query if exclude_self else make(6)
    return Splits(train=gallery, val=gallery, query=query, gallery=gallery, classes=list(CLASSES),
                  train_classes=[0, 1, 2], test_classes=[0, 1, 2], exclude_self=exclude_self,
                  protocol={"protocol": "synthetic", "query": "12 items", "gallery": "18 items"})


@pytest.fixture()
def models(tmp_path):
    gallery_meta = save(tmp_path / "gallery" / "model.pt", seed=0)
    save(tmp_path / "query_bct" / "model.pt", seed=1, compatible_with=gallery_meta.model_id)
    save(tmp_path / "query_independent" / "model.pt", seed=2)
    return [tmp_path / name / "model.pt" for name in ("gallery", "query_bct", "query_independent")]


def test_grid_on_tiny_models_writes_all_outputs(tmp_path, models):
    out = tmp_path / "grid"
    result = run_grid(models, synthetic_splits(), out, device="cpu")
    assert [m["label"] for m in result["models"]] == ["gallery", "query_bct", "query_independent"]
    pairs = result["pairs"]
    assert len(pairs) == 9
    by = {(p["query"], p["gallery"]): p for p in pairs}
    for label in ("gallery", "query_bct", "query_independent"):
        diag = by[(label, label)]
        assert diag["homogeneous"] and diag["compatible"] is None and diag["gap_to_paragon"] == pytest.approx(0.0)
    hetero = by[("query_bct", "gallery")]
    assert hetero["declared_compatible"] and hetero["warnings"] == []
    assert not by[("query_independent", "gallery")]["declared_compatible"]
    assert by[("query_independent", "gallery")]["warnings"]
    # the derived columns follow from the diagonal
    own = by[("query_bct", "query_bct")]["recall_at_1"]
    paragon = by[("gallery", "gallery")]["recall_at_1"]
    assert hetero["compatible"] == (hetero["recall_at_1"] > own)
    assert hetero["gap_to_paragon"] == pytest.approx(hetero["recall_at_1"] - paragon)
    assert hetero["flops_ratio"] == pytest.approx(hetero["gallery_mflops"] / hetero["query_mflops"])
    for p in pairs:
        for key in ("recall_at_1", "map_at_r", "map", "tar_at_far_1e-3"):
            assert 0.0 <= p[key] <= 1.0, (key, p)
    assert result["matrix"]["recall_at_1"][1][0] == hetero["recall_at_1"]

    saved = json.loads((out / "grid.json").read_text())
    assert saved["pairs"][1]["gallery"] == "query_bct"
    md = (out / "grid.md").read_text()
    assert "| query_bct | gallery |" in md and "## Recall@1" in md
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_with_self_gallery_and_an_incomparable_model(tmp_path, models):
    save(tmp_path / "wide" / "model.pt", seed=3, dim=16)
    result = run_grid([*models[:2], tmp_path / "wide" / "model.pt"], synthetic_splits(exclude_self=True),
                      tmp_path / "grid", device="cpu")
    by = {(p["query"], p["gallery"]): p for p in result["pairs"]}
    assert "same embedding dimension" in by[("query_bct", "wide")]["error"]
    assert by[("query_bct", "wide")]["recall_at_1"] is None
    assert by[("wide", "wide")]["recall_at_1"] is not None
    assert result["matrix"]["recall_at_1"][0][2] is None
    assert "not comparable" in (tmp_path / "grid" / "grid.md").read_text()


def test_same_model_twice_is_listed_once(tmp_path, models):
    result = run_grid([models[0], models[0], models[1]], synthetic_splits(), tmp_path / "grid", device="cpu")
    assert len(result["models"]) == 2 and len(result["pairs"]) == 4 and result["notes"]


def test_contract_declares_warns_and_refuses(tmp_path, models):
    gallery, query_bct, independent = (load_checkpoint(p).meta for p in models)
    assert declared_compatible(query_bct, gallery) and declared_compatible(gallery, gallery)
    assert not declared_compatible(independent, gallery)
    assert check_pair(query_bct, gallery) == []
    assert "not trained to be compatible" in check_pair(independent, gallery)[0]
    wide = save(tmp_path / "wide.pt", seed=4, dim=16)
    with pytest.raises(CompatibilityError, match="same embedding dimension"):
        check_pair(wide, gallery)


def test_model_labels():
    assert model_label(Path("runs/bench/mobilenetv3_small_bct/model.pt")) == "mobilenetv3_small_bct"
    assert model_label(Path("models/gallery_v2.pt")) == "gallery_v2"


def test_cli_argument_split(tmp_path):
    (tmp_path / "a=b.pt").write_bytes(b"")
    models, overrides = split_models_and_overrides(["g.pt", str(tmp_path / "a=b.pt"), "data.max_test_items=9"])
    assert models == [Path("g.pt"), tmp_path / "a=b.pt"] and overrides == ["data.max_test_items=9"]
    with pytest.raises(ConfigError, match="only data.key=value"):
        split_models_and_overrides(["g.pt", "train.epochs=3"])


def test_grid_command_end_to_end(tmp_path):
    """`hetsearch grid` on checkpoints whose recorded data config is a tiny image folder."""
    from typer.testing import CliRunner

    from hetsearch.cli import _register_feature_commands, app

    rng = np.random.default_rng(0)
    for ci, name in enumerate(CLASSES):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(ci * 80 + rng.integers(0, 40, (SIZE, SIZE)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(tmp_path / "images" / name / f"{i}.png")
    data = {"source": "image_folder", "root": str(tmp_path / "images"), "image_size": SIZE, "channels": 1,
            "test_fraction": 0.5, "val_fraction": 0.0}
    gallery = save(tmp_path / "g" / "model.pt", seed=0, config={"data": data})
    save(tmp_path / "q" / "model.pt", seed=1, compatible_with=gallery.model_id, config={"data": data})

    if "grid" not in [c.name for c in app.registered_commands]:
        _register_feature_commands()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["grid", str(tmp_path / "g" / "model.pt"), str(tmp_path / "q" / "model.pt"),
                                      "--out", str(out), "--device", "cpu", "data.gallery=test_rest"])
    assert result.exit_code == 0, result.output
    assert "| q | g |" in result.output
    grid = json.loads((out / "grid.json").read_text())
    assert grid["protocol"]["gallery_mode"] == "test_rest" and len(grid["pairs"]) == 4
