"""Candidate evaluator, search runner, retrain and the NAS stages of the pipeline (tiny, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hetsearch.data import DataConfig, make_splits
from hetsearch.models import create_model, load_checkpoint
from hetsearch.nas.evaluator import CandidateEvaluator, EvaluatorConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist"
TINY_SPACE = "{stage_layers: [1, 1, 1, 1], widths: [0.5, 1.0]}"


@pytest.fixture(scope="module")
def tiny_splits():
    return make_splits(DataConfig(max_train_items=400, max_test_items=100, val_fraction=0.2))


def test_evaluator_measures_homo_and_hetero_on_validation_split_and_caches(tiny_splits):
    torch.manual_seed(0)
    supernet = create_model("cmpnas_supernet", num_classes=10, embedding_dim=16,
                            backbone_args={"stage_layers": [1, 1, 1, 1], "widths": [0.5, 1.0]})
    gallery = create_model("resnet18", num_classes=10, embedding_dim=16, backbone_args={"width": 4})
    evaluator = CandidateEvaluator(supernet, gallery, tiny_splits.train, tiny_splits.val,
                                   EvaluatorConfig(calib_batches=2, calib_batch_size=32, val_items=50))
    assert len(evaluator.val) == 50 and len(evaluator.calib_batches) == 2
    space = supernet.backbone.space
    arch = space.sample(torch.Generator().manual_seed(0))
    weights = {k: v.clone() for k, v in supernet.named_parameters()}
    result = evaluator(arch)
    assert result["arch"] == arch.id and result["mflops"] > 0
    for key in ("homo_recall_at_1", "hetero_recall_at_1", "homo_map_at_r", "hetero_map_at_r"):
        assert 0.0 <= result[key] <= 1.0
    assert evaluator(arch) is result  # cached
    assert all(torch.equal(v, dict(supernet.named_parameters())[k]) for k, v in weights.items())
    assert supernet.backbone.fixed_path is None  # the path is released after evaluation
    # evaluation is reproducible: a fresh evaluator measures the same numbers
    again = CandidateEvaluator(supernet, gallery, tiny_splits.train, tiny_splits.val,
                               EvaluatorConfig(calib_batches=2, calib_batch_size=32, val_items=50))(arch)
    assert again["homo_recall_at_1"] == result["homo_recall_at_1"]
    assert again["hetero_recall_at_1"] == result["hetero_recall_at_1"]


def _unit(degrees: list[float]) -> np.ndarray:
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_evaluator_metrics_match_a_hand_computation(tiny_splits, monkeypatch):
    """M(a, a) and M(a, g) on 6 validation items with 2-d embeddings whose rankings are worked out
    by hand (angles in degrees; similarity = cosine, each item excluded from its own results):

    labels             0    0    0    1    1    1
    candidate a        0   10  100   90   93  200
    gallery model g    5   70  180  300  120  270

    homogeneous nearest neighbours: 0->1 ok, 1->0 ok, 2->4 no, 3->4 ok, 4->3 ok, 5->2 no: R@1 = 4/6.
      MAP@R (R = 2): top-2 relevance [1,0] [1,0] [0,0] [1,0] [1,0] [0,1] -> AP 1/2 1/2 0 1/2 1/2 1/4;
      mean 2.25/6 = 0.375.
    heterogeneous (query a_i, gallery g_j, j != i): 0->g3 no, 1->g0 ok, 2->g4 no, 3->g1 no, 4->g1 no,
      5->g2 no: R@1 = 1/6. Top-2 relevance [0,1] [1,0] [0,1] [0,1] [0,0] [0,1] -> AP 1/4 1/2 1/4 1/4
      0 1/4; MAP@R = 1.5/6 = 0.25.
    """
    torch.manual_seed(0)
    supernet = create_model("cmpnas_supernet", num_classes=10, embedding_dim=2,
                            backbone_args={"stage_layers": [1, 1, 1, 1], "widths": [0.5, 1.0]})
    gallery = create_model("resnet18", num_classes=10, embedding_dim=2, backbone_args={"width": 4})
    evaluator = CandidateEvaluator(supernet, gallery, tiny_splits.train, tiny_splits.val,
                                   EvaluatorConfig(calib_batches=1, calib_batch_size=8, val_items=6))
    arch = supernet.backbone.space.sample(torch.Generator().manual_seed(0))
    monkeypatch.setattr(evaluator, "val_labels", np.array([0, 0, 0, 1, 1, 1]))
    monkeypatch.setattr(evaluator, "gallery_val", _unit([5, 70, 180, 300, 120, 270]))
    monkeypatch.setattr(evaluator, "embed_val", lambda a: _unit([0, 10, 100, 90, 93, 200]))
    result = evaluator(arch)
    assert result["homo_recall_at_1"] == pytest.approx(4 / 6)
    assert result["homo_map_at_r"] == pytest.approx(0.375)
    assert result["hetero_recall_at_1"] == pytest.approx(1 / 6)
    assert result["hetero_map_at_r"] == pytest.approx(0.25)
    assert result["mflops"] == pytest.approx(evaluator.cost.flops(arch) / 1e6)


def test_bn_recalibration_is_the_exact_average_over_the_calibration_batches():
    """recalibrate_bn: running mean = mean of the batch means, running var = mean of the unbiased
    batch variances (cumulative average: every batch weighs the same), computed by hand here."""
    from hetsearch.nas.evaluator import recalibrate_bn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)).eval()
    model[1].running_mean.fill_(5.0)   # stale statistics that must not leak into the result
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.rand(4, 1, 6, 6), torch.rand(2, 1, 6, 6) * 3]
    recalibrate_bn(model, batches)
    with torch.no_grad():
        feats = [model[0](x) for x in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats])
    variances = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats])
    torch.testing.assert_close(model[1].running_mean, means.mean(0))
    torch.testing.assert_close(model[1].running_var, variances.mean(0))
    assert not model.training and model[1].momentum == 0.1   # mode and momentum restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())   # weights untouched


@pytest.mark.slow
def test_tiny_end_to_end_pipeline_with_nas(tmp_path, capsys):
    """gallery -> supernet (BCT) -> search -> retrain (BCT) -> grid, then a rerun skips every stage."""
    from hetsearch.pipeline import load_pipeline_config, run_pipeline

    # 32 = the pooled features of the width-4 gallery ResNet-18 (gallery.yaml embeds them)
    tiny = ["train.batch_size=32", "train.max_steps_per_epoch=2", "train.epochs=1", "model.embedding_dim=32"]
    pipeline = {
        "name": "tiny_nas", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "fashion_mnist", "max_train_items": 400, "max_test_items": 100, "val_fraction": 0.2},
        "runtime": {"seed": 0, "device": "cpu", "progress": False},
        "gallery": {"config": str(CONFIGS / "gallery.yaml"), "overrides": [*tiny, "model.backbone_args={width: 4}"]},
        "queries": [],
        "nas": {
            "supernet": {"config": str(CONFIGS / "supernet.yaml"),
                         "overrides": [*tiny, f"model.backbone_args={TINY_SPACE}"]},
            "search": {"config": str(CONFIGS / "search.yaml"),
                       "overrides": ["search.population=4", "search.generations=2", "search.parents=2",
                                     "search.mutations=1", "search.crossovers=1", "evaluator.calib_batches=1",
                                     "evaluator.calib_batch_size=32", "evaluator.val_items=40"]},
            "retrain": {"config": str(CONFIGS / "retrain.yaml"), "overrides": tiny},
            "budgets_mflops": [1.0],
        },
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline))
    ctx = run_pipeline(load_pipeline_config(config), log=lambda m: None)
    runs = tmp_path / "runs"
    best = json.loads((runs / "cmpnas_search_1mf" / "best.json").read_text())
    assert best["mflops"] <= 1.0 and best["evaluations"] == 8
    assert best["backbone_args"]["arch"] == best["arch"] and "seed" not in best["backbone_args"]
    log = (runs / "cmpnas_search_1mf" / "evaluated.jsonl").read_text().splitlines()
    assert len(log) == 8
    # the search's Pareto plot (hetsearch.nas.plots), named in its summary
    assert (runs / "cmpnas_search_1mf" / "pareto.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    summary = json.loads((runs / "cmpnas_search_1mf" / "search_summary.json").read_text())
    assert summary["pareto_png"] == str(runs / "cmpnas_search_1mf" / "pareto.png")
    gallery = load_checkpoint(runs / "gallery" / "model.pt")
    supernet = load_checkpoint(runs / "cmpnas_supernet" / "model.pt")
    retrained = load_checkpoint(runs / "cmpnas_1mf" / "model.pt")
    assert supernet.meta.compatible_with == gallery.meta.model_id
    assert retrained.meta.spec.backbone == "cmpnas" and retrained.meta.spec.backbone_args["arch"] == best["arch"]
    # retrain.yaml trains the default method (bct+contrastive, the closed set's validated choice)
    assert retrained.meta.compatible_with == gallery.meta.model_id and retrained.meta.compatibility == "bct+contrastive"
    assert retrained.meta.flops == pytest.approx(best["mflops"] * 1e6)
    assert set(ctx.models) == {"gallery", "cmpnas_1mf"}
    grid = json.loads((runs / "grid" / "grid.json").read_text())
    assert {m["label"] for m in grid["models"]} >= {"gallery", "cmpnas_1mf"} or len(grid["models"]) == 2
    assert {"cmpnas_supernet", "cmpnas_search_1mf", "cmpnas_1mf"} <= set(ctx.timings_s)
    # a second run finds every stage done
    messages = []
    ctx2 = run_pipeline(load_pipeline_config(config), log=messages.append)
    assert sum("skipped" in m for m in messages) == 5
    assert ctx2.models == ctx.models
