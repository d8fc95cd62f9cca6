"""Rerunning a pipeline: finished stages are reused only while they still match the configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hetsearch.errors import ConfigError
from hetsearch.pipeline import load_pipeline_config, run_pipeline

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist"
# 32 = the pooled features of the width-4 gallery ResNet-18 (gallery.yaml embeds them)
TINY = ["train.batch_size=32", "train.max_steps_per_epoch=2", "train.epochs=1", "model.embedding_dim=32"]


def _write(tmp_path: Path, queries: list[dict], gallery_overrides: list[str] = ()) -> Path:
    pipeline = {
        "name": "rerun", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "fashion_mnist", "max_train_items": 300, "max_test_items": 100, "val_fraction": 0.2},
        "runtime": {"seed": 0, "device": "cpu", "progress": False},
        "gallery": {"config": str(CONFIGS / "gallery.yaml"),
                    "overrides": [*TINY, "model.backbone_args={width: 4}", *gallery_overrides]},
        "queries": queries,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def _query(name: str, method: str) -> dict:
    return {"config": str(CONFIGS / "query_mobilenetv3_small.yaml"), "name": name,
            "overrides": [*TINY, f"compat.method={method}"]}


def test_an_added_stage_is_trained_and_the_grid_scored_again(tmp_path):
    run_pipeline(load_pipeline_config(_write(tmp_path, [_query("q_bct", "bct")])), log=lambda m: None)
    messages = []
    run_pipeline(load_pipeline_config(_write(tmp_path, [_query("q_bct", "bct"), _query("q_none", "none")])),
                 log=messages.append)
    assert "[pipeline] gallery: done already" in messages[0] and "q_bct: done already" in messages[1]
    assert "[pipeline] q_none: running" in messages and "[pipeline] grid: running" in messages
    grid = json.loads((tmp_path / "runs" / "grid" / "grid.json").read_text())
    assert sorted(m["label"] for m in grid["models"]) == ["gallery", "q_bct", "q_none"]


def test_a_finished_stage_with_other_settings_is_an_error_not_reused(tmp_path):
    run_pipeline(load_pipeline_config(_write(tmp_path, [])), log=lambda m: None)
    with pytest.raises(ConfigError, match=r"gallery.*config differs in section\(s\) train"):
        run_pipeline(load_pipeline_config(_write(tmp_path, [], gallery_overrides=["train.epochs=2"])),
                     log=lambda m: None)
