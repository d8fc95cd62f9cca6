"""Candidate evaluator, search runner, retrain and the NAS stages of the pipeline (tiny, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

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
    gallery = load_checkpoint(runs / "gallery" / "model.pt")
    supernet = load_checkpoint(runs / "cmpnas_supernet" / "model.pt")
    retrained = load_checkpoint(runs / "cmpnas_1mf" / "model.pt")
    assert supernet.meta.compatible_with == gallery.meta.model_id
    assert retrained.meta.spec.backbone == "cmpnas" and retrained.meta.spec.backbone_args["arch"] == best["arch"]
    assert retrained.meta.compatible_with == gallery.meta.model_id and retrained.meta.compatibility == "bct"
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
