"""`hetsearch evaluate --queries DIR --gallery DIR | --index DIR`, `grid --queries`, and `query`
given a folder; tiny random-weight models (tests/index_fixtures.py) and generated PNG folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from index_fixtures import run_cli as run  # noqa: E402  (the CLI as a user runs it; its exit status)
from hetsearch.eval import evaluate_embeddings
from hetsearch.folder_eval import evaluate_folders, evaluate_index
from hetsearch.index.folders import folder_splits
from hetsearch.index import build_index, folder_items
from index_fixtures import make_tiny_models, write_image_folder
from hetsearch.models import load_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evalfolders")
    models = make_tiny_models(root / "models")
    write_image_folder(root / "gallery", n=16, seed=1)
    write_image_folder(root / "queries", n=8, seed=2)
    build_index(root / "idx", load_checkpoint(models.gallery), folder_items(root / "gallery", 1, 16))
    return root, models


def _reference(models, root):
    """The same metrics computed by hand: embed both folders, labels by class name."""
    from hetsearch.index.folders import decode_spec_of, read_labelled_folders

    q, g = load_checkpoint(models.query), load_checkpoint(models.gallery)
    q_set, g_set = read_labelled_folders([root / "queries", root / "gallery"], decode_spec_of(q.meta))
    from hetsearch.eval import embed

    return evaluate_embeddings(embed(q.model, q_set.images), q_set.labels.numpy(), embed(g.model, g_set.images),
                               g_set.labels.numpy())


def test_folders_and_index_give_the_same_metrics(setup):
    root, models = setup
    ref = _reference(models, root)
    by_folder = evaluate_folders(models.query, models.gallery, root / "queries", root / "gallery", device="cpu")
    by_index = evaluate_index(models.query, root / "idx", root / "queries")
    for key in ("recall_at_1", "map_at_r", "map", "num_queries", "num_gallery"):
        assert by_folder["metrics"][key] == pytest.approx(ref[key], abs=1e-6)
        assert by_index["metrics"][key] == pytest.approx(ref[key], abs=1e-5)
    assert by_folder["protocol"]["counts"] == {"query": 8, "gallery": 16}
    assert by_index["gallery_model"] == models.gallery_meta.model_id


def test_same_folder_excludes_self(setup):
    root, models = setup
    result = evaluate_folders(models.gallery, models.gallery, root / "gallery", root / "gallery", device="cpu")
    assert result["protocol"]["exclude_self"] and result["metrics"]["num_gallery"] == 16


def test_cli_evaluate_json_and_errors(setup, capsys, tmp_path):
    root, models = setup
    out = tmp_path / "m.json"
    assert run(*["evaluate", "--query-model", models.query, "--queries", root / "queries",
                "--index", root / "idx", "--json", "--out", out]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"]["num_queries"] == 8 and json.loads(out.read_text())["metrics"] == printed["metrics"]
    for args, message in ((["--queries", str(root / "queries")], "exactly one of --gallery"),
                          (["--index", str(root / "idx")], "need --queries"),
                          (["--queries", str(root / "queries"), "--gallery", str(root / "gallery")], "needs --gallery-model")):
        assert run(*["evaluate", "--query-model", models.query, *args]) == 2
        assert message in capsys.readouterr().err
    # the model contract holds for --index: an undeclared model is refused
    assert run(*["evaluate", "--query-model", models.stranger, "--queries", root / "queries",
                "--index", root / "idx"]) == 2
    assert "not compatible" in capsys.readouterr().err


def test_grid_on_folders_and_index(setup, tmp_path, capsys):
    root, models = setup
    splits = folder_splits(load_checkpoint(models.gallery).meta, root / "queries", index=root / "idx")
    assert len(splits.gallery) == 16 and splits.protocol["index"] == str(root / "idx")
    assert run(*["grid", models.gallery, models.query, "--queries", root / "queries",
                "--gallery", root / "gallery", "--out", tmp_path / "grid", "--device", "cpu"]) == 0
    grid = json.loads((tmp_path / "grid" / "grid.json").read_text())
    assert grid["protocol"]["protocol"] == "folders" and len(grid["pairs"]) == 4


def test_query_accepts_a_folder(setup, capsys):
    root, models = setup
    assert run(*["query", "--index", root / "idx", "--query-model", models.query, root / "queries",
                "--k", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["queries"]) == 8 and all(len(q["results"]) == 2 for q in result["queries"])
    assert np.isfinite(result["queries"][0]["results"][0]["score"])
