"""The closed-form map of the query embedding onto the gallery's (hetsearch.train.embedding_map): the ridge
fit, the held-out gate, and `compat.linear_map` at the end of training (tiny CLI runs on a Fashion-MNIST
subset). What the map achieves is measured by bench/gallery_aware.py (protocols open_set_map /
closed_set_map), not here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from index_fixtures import run_cli as run

from hetsearch.models.checkpoint import read_checkpoint_file
from hetsearch.train.embedding_map import MapTargets, fit_affine_map, unit


TINY = ["data.max_train_items=600", "data.max_test_items=200", "train.epochs=1", "train.batch_size=64",
        "train.max_steps_per_epoch=3", "runtime.progress=false", "runtime.device=cpu"]


def test_the_ridge_fit_recovers_an_affine_map_and_the_gate_scores_held_out_items():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    matrix, bias = rng.normal(size=(8, 8)), rng.normal(size=8)
    b, c = fit_affine_map(x, x @ matrix + bias, lam=1e-6)
    assert np.allclose(b, matrix, atol=1e-4) and np.allclose(c, bias, atol=1e-4)
    # held-out items whose query embedding is a rotated gallery embedding: the map finds them, the raw
    # query embedding does not
    labels = np.repeat(np.arange(4), 100)
    centres = unit(rng.normal(size=(4, 8)))
    gallery = unit(centres[labels] + 0.05 * rng.normal(size=(400, 8)))
    rotation = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    query = gallery @ rotation
    targets = MapTargets(torch.zeros(300, 1), gallery[:300], labels[:300], torch.zeros(100, 1), gallery[300:],
                         labels[300:])
    before = targets.val_recall(query[300:])
    b, c = fit_affine_map(query[:300], gallery[:300], lam=0.01)
    assert targets.val_recall(query[300:] @ b + c) == 1.0 > before
    unlabelled = MapTargets(torch.zeros(300, 1), gallery[:300], -np.ones(300), torch.zeros(100, 1), gallery[300:],
                            -np.ones(100))
    assert unlabelled.val_recall(gallery[300:]) == 1.0                  # each finds its own gallery embedding


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    runs = tmp_path_factory.mktemp("linear_map") / "runs"
    assert run("train", "configs/fashion_mnist/gallery.yaml", f"output_dir={runs}", "name=gallery", *TINY) == 0
    return runs, runs / "gallery" / "model.pt"


def test_training_with_linear_map_fits_gates_and_records_it_once(gallery, capsys):
    runs, path = gallery
    args = ["train", "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml", f"output_dir={runs}", "name=q",
            "compat.method=contrastive", f"compat.gallery_model={path}", "compat.bank.views=2",
            "train.task_loss=none", "compat.linear_map=true", *TINY]
    assert run(*args) == 0
    meta = read_checkpoint_file(runs / "q" / "model.pt")["meta"]
    fitted = meta["extra"]["linear_map"]
    assert fitted["fitted_on"] + fitted["validated_on"] == 540           # the training split (600 minus validation)
    assert fitted["validated_on"] == 54
    assert fitted["applied"] == (fitted["val_recall_at_1_after"] > fitted["val_recall_at_1_before"])
    assert "training images" in fitted["targets"] and meta["compatible_with"]
    assert run(*args, "--resume") == 0                                   # finished: the map is not fitted twice
    assert read_checkpoint_file(runs / "q" / "model.pt")["meta"]["model_id"] == meta["model_id"]


def test_linear_map_needs_a_gallery_model_and_a_head(gallery, capsys):
    runs, path = gallery
    base = ["train", "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml", f"output_dir={runs}", "compat.method=none",
            "compat.gallery_model=null", "compat.linear_map=true", *TINY]
    assert run(*base, "name=bad1") == 2
    assert "compat.linear_map" in capsys.readouterr().err
    assert run(*base[:-len(TINY) - 2], "compat.method=bct", f"compat.gallery_model={path}", "compat.linear_map=true",
               "model.embedding_layer=backbone", *TINY, "name=bad2") == 2
    assert "embedding head" in capsys.readouterr().err
