"""Evolution / random search with a synthetic reward: budget, validity, resume, logs."""

from __future__ import annotations

import json

import pytest
import torch

from hetsearch.errors import ConfigError
from hetsearch.nas.cost import CostTable
from hetsearch.nas.rewards import RewardConfig, make_reward
from hetsearch.nas.search import BEST_JSON, BEST_YAML, LOG_FILE, STATE_FILE, SearchConfig, search
from hetsearch.nas.space import Architecture, SearchSpace

SPACE = SearchSpace.for_input(28)
TABLE = CostTable(SPACE, image_size=28, embedding_dim=128)


def mflops(arch: Architecture) -> float:
    return TABLE.flops(arch) / 1e6


def fake_evaluate(arch: Architecture) -> dict:
    """Deterministic synthetic accuracies: prefers wide layers and 5x5 kernels."""
    score = sum(w for w in arch.widths) / (4 * len(arch)) + sum(b == "shuffle5" for b in arch.blocks) / len(arch)
    return {"homo_recall_at_1": score / 2, "hetero_recall_at_1": score / 2 + 0.01 * arch.widths[0]}


CFG = dict(population=8, generations=4, parents=3, mutations=3, crossovers=3, mutation_prob=0.2,
           max_cost=1.5, min_cost=0.9, seed=3)
REWARD = make_reward(RewardConfig("r3", alpha=0.5))


def test_mutation_and_crossover_keep_architectures_valid_and_in_budget():
    g = torch.Generator().manual_seed(0)
    a, b = SPACE.sample(g), SPACE.sample(g)
    for _ in range(50):
        SPACE.check(SPACE.mutate(a, 0.3, g))
        child = SPACE.crossover(a, b, g)
        SPACE.check(child)
        assert all(c in (x, y) for c, x, y in zip(zip(child.blocks, child.widths),
                                                   zip(a.blocks, a.widths), zip(b.blocks, b.widths)))
    assert SPACE.mutate(a, 0.0, g) == a
    result = search(SPACE, mflops, fake_evaluate, REWARD, SearchConfig(**CFG), log=None)
    origins = {r["origin"] for r in result.records}
    assert {"mutation", "crossover", "random"} <= origins
    assert len({r["arch"] for r in result.records}) == len(result.records) == 8 * 4
    for r in result.records:
        SPACE.parse(r["arch"])
        assert 0.9 <= r["cost"] <= 1.5 and r["cost"] == pytest.approx(mflops(Architecture.from_id(r["arch"])))
    assert result.best["reward"] == max(r["reward"] for r in result.records)


def test_evolution_beats_random_with_same_number_of_evaluations():
    evo = search(SPACE, mflops, fake_evaluate, REWARD, SearchConfig(**{**CFG, "generations": 6}), log=None)
    rnd = search(SPACE, mflops, fake_evaluate, REWARD, SearchConfig(**{**CFG, "generations": 6, "strategy": "random"}),
                 log=None)
    assert len(evo.records) == len(rnd.records) == 48
    assert {r["origin"] for r in rnd.records} == {"random"}
    assert evo.best["reward"] >= rnd.best["reward"]


def test_search_resumes_after_interruption_to_the_same_result(tmp_path):
    cfg = SearchConfig(**CFG)
    full = search(SPACE, mflops, fake_evaluate, REWARD, cfg, out_dir=tmp_path / "full", log=None)

    calls = []

    def crashing(arch):
        calls.append(arch.id)
        if len(calls) == 8 * 2 + 3:  # in the middle of generation 3
            raise KeyboardInterrupt
        return fake_evaluate(arch)

    with pytest.raises(KeyboardInterrupt):
        search(SPACE, mflops, crashing, REWARD, cfg, out_dir=tmp_path / "resumed", log=None)
    state = json.loads((tmp_path / "resumed" / STATE_FILE).read_text())
    assert state["generation"] == 2 and len(state["records"]) == 16
    assert not (tmp_path / "resumed" / BEST_JSON).exists()
    evaluated_again = []

    def counting(arch):
        evaluated_again.append(arch.id)
        return fake_evaluate(arch)

    resumed = search(SPACE, mflops, counting, REWARD, cfg, out_dir=tmp_path / "resumed", log=None)
    assert len(evaluated_again) == 16  # generations 3 and 4 only
    assert resumed.best == full.best and resumed.records == full.records
    log = [json.loads(line) for line in (tmp_path / "resumed" / LOG_FILE).read_text().splitlines()]
    assert log == full.records  # no duplicates from the interrupted generation
    best = json.loads((tmp_path / "resumed" / BEST_JSON).read_text())
    assert best["arch"] == full.best["arch"] and (tmp_path / "resumed" / BEST_YAML).exists()
    # a finished search resumes to the same result without evaluating anything
    again = search(SPACE, mflops, lambda a: pytest.fail("re-evaluated"), REWARD, cfg,
                   out_dir=tmp_path / "resumed", log=None)
    assert again.best == full.best
    # a different config cannot resume the saved state
    with pytest.raises(ConfigError, match="cannot resume"):
        search(SPACE, mflops, fake_evaluate, REWARD, SearchConfig(**{**CFG, "seed": 4}),
               out_dir=tmp_path / "resumed", log=None)


def test_rewards_and_config_validation():
    record = {"homo_recall_at_1": 0.5, "hetero_recall_at_1": 0.8, "homo_map_at_r": 0.2, "hetero_map_at_r": 0.3}
    assert make_reward(RewardConfig("r1"))(record) == 0.5
    assert make_reward(RewardConfig("r2"))(record) == 0.8
    assert make_reward(RewardConfig("r3", alpha=0.5))(record) == pytest.approx(1.05)
    assert make_reward(RewardConfig("r3", alpha=1.0, metric="map_at_r"))(record) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="reward.name"):
        make_reward(RewardConfig("r4"))
    with pytest.raises(ConfigError, match="mutations"):
        search(SPACE, mflops, fake_evaluate, REWARD, SearchConfig(population=4, mutations=3, crossovers=3), log=None)
    with pytest.raises(ConfigError, match="budget"):
        search(SPACE, mflops, fake_evaluate, REWARD, SearchConfig(population=2, generations=1, mutations=0, crossovers=0, max_cost=0.01,
                                                                              max_tries=10),
               log=None)


def test_random_candidates_fill_the_population_under_a_budget_far_below_typical_cost():
    # a uniformly random path costs ~2.8 MFLOPs; under 1.0 MFLOPs rejection alone almost never succeeds
    cfg = SearchConfig(population=10, generations=2, parents=3, mutations=3, crossovers=3, max_cost=1.0, seed=1)
    result = search(SPACE, mflops, fake_evaluate, REWARD, cfg, log=None)
    assert len(result.records) == 20 and all(r["cost"] <= 1.0 for r in result.records)


def test_best_json_is_written_once_complete_by_the_search(tmp_path, monkeypatch):
    """best.json is the file later stages wait for (the pipeline's retrain): it is written once,
    atomically, with the caller's extra fields (the runner's backbone_args) already in it; if
    computing them fails, no best.json exists (nothing half-done for the retrain to reject)."""
    import importlib

    search_module = importlib.import_module("hetsearch.nas.search")  # the package exports a function `search`

    cfg = SearchConfig(**{**CFG, "generations": 2})

    def failing_extras(best):
        raise RuntimeError("stopped while computing the extra fields")

    with pytest.raises(RuntimeError):
        search(SPACE, mflops, fake_evaluate, REWARD, cfg, out_dir=tmp_path, log=None, best_extras=failing_extras)
    assert not (tmp_path / BEST_JSON).exists() and not (tmp_path / BEST_YAML).exists()

    writes = []
    real_write = search_module.atomic_write_json
    monkeypatch.setattr(search_module, "atomic_write_json",
                        lambda path, data: (writes.append(path.name), real_write(path, data)))
    extras = lambda best: {"backbone_args": {"arch": best["arch"]}, "mflops": mflops(Architecture.from_id(best["arch"]))}
    result = search(SPACE, mflops, fake_evaluate, REWARD, cfg, out_dir=tmp_path, log=None, best_extras=extras)
    assert writes.count(BEST_JSON) == 1
    best = json.loads((tmp_path / BEST_JSON).read_text())
    assert best["arch"] == result.best["arch"] and best["backbone_args"] == {"arch": result.best["arch"]}
    assert best["mflops"] == pytest.approx(result.best["cost"])
    import yaml

    assert yaml.safe_load((tmp_path / BEST_YAML).read_text()) == best
