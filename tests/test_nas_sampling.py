"""`hetsearch nas sample` (hetsearch.nas.sampling): random paths under a budget as the search draws them,
stratified over FLOPs bins on demand, written so `hetsearch nas retrain` trains them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hetsearch.config import TrainRunConfig
from hetsearch.errors import ConfigError
from hetsearch.models import load_checkpoint
from hetsearch.nas.sampling import PathSpace, draw_paths
from hetsearch.utils.typed_config import load_config
from index_fixtures import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist"


@pytest.fixture(scope="module")
def path_space() -> PathSpace:
    return PathSpace.of_config(load_config(TrainRunConfig, CONFIGS / "supernet.yaml"))


def test_draws_are_distinct_within_budget_and_depend_only_on_the_seed(path_space):
    drawn = draw_paths(path_space, 20, max_mflops=1.9, seed=3)
    assert len({a.id for a in drawn}) == 20 and all(path_space.mflops(a) <= 1.9 for a in drawn)
    assert [a.id for a in draw_paths(path_space, 20, max_mflops=1.9, seed=3)] == [a.id for a in drawn]
    assert [a.id for a in draw_paths(path_space, 20, max_mflops=1.9, seed=4)] != [a.id for a in drawn]


def test_stratified_draws_put_one_path_in_each_equal_flops_bin(path_space):
    drawn = draw_paths(path_space, 5, max_mflops=1.9, min_mflops=0.9, seed=0)
    assert len(drawn) == 5
    for i, arch in enumerate(drawn):
        assert 0.9 + 0.2 * i - 1e-9 <= path_space.mflops(arch) <= 0.9 + 0.2 * (i + 1) + 1e-9


@pytest.mark.parametrize("kwargs, message", [({"max_mflops": 0.5}, "cheapest path costs 0.765"),
                                             ({"max_mflops": 1.9, "min_mflops": 2.0}, "expected below max_mflops"),
                                             ({"max_mflops": 1.9, "min_mflops": 0.1}, "no path found costing 0.100")])
def test_a_budget_the_space_cannot_meet_is_refused_with_what_to_change(path_space, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        draw_paths(path_space, 4, **kwargs)


def test_sample_cli_writes_paths_that_nas_retrain_trains(tmp_path, capsys):
    assert run_cli("nas", "sample", CONFIGS / "supernet.yaml", "--max-mflops", "1.9", "--count", "2",
                   "--out", tmp_path / "paths") == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    record = json.loads((tmp_path / "paths" / "path_00.json").read_text())
    assert len(printed) == 2 and printed[0]["arch"] == record["arch"] and record["mflops"] <= 1.9
    assert record["backbone_args"]["arch"] == record["arch"] and "seed" not in record["backbone_args"]
    tiny = ["compat.method=none", "train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=32",
            "data.max_train_items=200", "data.max_test_items=50", f"output_dir={tmp_path / 'runs'}",
            "runtime.device=cpu", "runtime.progress=false"]
    assert run_cli("nas", "retrain", CONFIGS / "retrain.yaml", tmp_path / "paths" / "path_00.json", *tiny) == 0
    model = load_checkpoint(next((tmp_path / "runs").rglob("model.pt")))
    assert model.meta.spec.backbone == "cmpnas" and model.meta.spec.backbone_args["arch"] == record["arch"]
    assert model.meta.flops == pytest.approx(record["mflops"] * 1e6)


def test_sample_cli_refuses_an_impossible_budget_in_one_line(tmp_path, capsys):
    assert run_cli("nas", "sample", CONFIGS / "supernet.yaml", "--max-mflops", "0.5", "--out", tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raise the budget" in err[0] and not list(tmp_path.iterdir())
