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


@pytest.mark.learning
def test_evolution_beats_random_with_same_number_of_evaluations(learning_seed, record_property):
    """On average over 8 search seeds: with one seed evolution loses to random search in about 1 case
    of 7 (measured over seeds 0-63: it wins 55), so a single seed would be luck."""
    gaps = []
    for seed in range(8 * learning_seed, 8 * learning_seed + 8):
        cfg = {**CFG, "generations": 6, "seed": seed}
        evo = search(SPACE, mflops, fake_evaluate, REWARD, SearchConfig(**cfg), log=None)
        rnd = search(SPACE, mflops, fake_evaluate, REWARD, SearchConfig(**{**cfg, "strategy": "random"}), log=None)
        assert len(evo.records) == len(rnd.records) == 48
        assert {r["origin"] for r in rnd.records} == {"random"}
        gaps.append(evo.best["reward"] - rnd.best["reward"])
    record_property("mean_reward_gap", round(sum(gaps) / len(gaps), 4))
    # measured over seeds 0-63: gap 0.11 on average (sd 0.09); the mean of 8 consecutive seeds >= 0.069
    assert sum(gaps) / len(gaps) >= 0.02, gaps


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


# ---------------------------------------------------------------------------------------------
# registries: strategies, rewards, efficiency predictors (one clear line for an unknown name)

def _one_line_listing(exc: BaseException, *names: str) -> None:
    message = str(exc)
    assert "\n" not in message and all(name in message for name in names), message


def _make_cost(name):
    from hetsearch.nas.efficiency import CostInputs, make_cost

    return make_cost(name, CostInputs(table=TABLE))


@pytest.mark.parametrize("bad, match, choices", [
    (lambda: SearchConfig(strategy="annealing").validate(), r"^search\.strategy: unknown .*'annealing'", ("evolution", "random")),
    (lambda: make_reward(RewardConfig("r9")), r"^reward\.name: unknown reward 'r9'", ("r1", "r2", "r3")),
    (lambda: SearchConfig(cost="joules").validate(), r"^search\.cost: unknown .*'joules'", ("latency_ms", "mflops")),
    (lambda: _make_cost("joules"), r"^search\.cost: unknown .*'joules'", ("latency_ms", "mflops")),
], ids=["strategy", "reward", "cost", "make_cost"])
def test_unknown_name_in_a_registry_is_one_line_listing_the_choices(bad, match, choices):
    with pytest.raises(ConfigError, match=match) as exc:
        bad()
    _one_line_listing(exc.value, *choices)


def test_latency_cost_without_a_table_says_what_to_set():
    with pytest.raises(ConfigError, match="latency_table"):
        _make_cost("latency_ms")


def test_efficiency_predictors_mflops_and_latency_ms(tmp_path):
    from hetsearch.nas.cost import LatencyTable
    from hetsearch.nas.efficiency import CostInputs, make_cost

    arch = SPACE.sample(torch.Generator().manual_seed(0))
    entries = [{f"{b}:{w}": 1e-4 * (i + 1) + 1e-5 * w for b in SPACE.blocks for w in range(len(SPACE.widths))}
               for i in range(SPACE.num_layers)]
    table = LatencyTable(2e-3, entries)
    (tmp_path / "latency.json").write_text(json.dumps(table.to_dict()))
    inputs = CostInputs(table=TABLE, latency_table=str(tmp_path / "latency.json"))
    assert make_cost("mflops", inputs)(arch) == TABLE.flops(arch) / 1e6
    assert make_cost("latency_ms", inputs)(arch) == pytest.approx(table(arch) * 1e3)


def test_registered_strategy_reward_and_cost_drive_the_search():
    """A new strategy / reward / efficiency predictor is one registered function or class; the
    loop uses it by its config name (registrations undone at the end of `temporary()`)."""
    from hetsearch.nas import efficiency, rewards, strategies

    with strategies.STRATEGIES.temporary(), rewards.REWARDS.temporary(), efficiency.COSTS.temporary():
        _search_with_registered_members(strategies, rewards, efficiency)
    assert "mutants_only" not in strategies.STRATEGIES and "width" not in rewards.REWARDS
    assert "mparams" not in efficiency.COSTS


def _search_with_registered_members(strategies, rewards, efficiency):
    @strategies.register_strategy("mutants_only")
    class MutantsOnly:
        """Mutations of the parents only (after a random generation 0)."""

        def __init__(self, cfg):
            self.population = cfg.population

        def propose(self, generation, parents, moves):
            if generation == 0:
                return [(a, "random") for a in moves.random(self.population)]
            return [(a, "mutation") for a in moves.mutations(parents, self.population)]

    @rewards.register_reward("width")
    def width(homo_key, hetero_key, alpha):
        """The sum of the layer widths (a test reward)."""
        return lambda record: float(record["widths"])

    @efficiency.register_cost("mparams")
    def mparams(inputs):
        """Parameters in millions."""
        return lambda arch: inputs.table(arch).params / 1e6

    with pytest.raises(ValueError, match="twice"):
        strategies.register_strategy("evolution")(MutantsOnly)
    cfg = SearchConfig(**{**CFG, "strategy": "mutants_only", "cost": "mparams", "max_cost": 0.2, "min_cost": None})
    cost = efficiency.make_cost("mparams", efficiency.CostInputs(table=TABLE))
    result = search(SPACE, cost, lambda a: {"widths": sum(a.widths)}, make_reward(RewardConfig("width")), cfg,
                    log=None)
    assert {r["origin"] for r in result.records if r["generation"] > 0} == {"mutation"}
    assert all(r["cost"] <= 0.2 and r["reward"] == r["widths"] for r in result.records)


# Candidates of the tiny seeded search `CFG` (8 x 4 evaluations), "<origin letter>:<arch id>" in
# evaluation order, 2 per string, recorded with the code before strategies, rewards and costs
# moved behind registries (issue 14): the same seed proposes the same candidates in the same order.
PINNED = {
    "evolution": [
        "r:30-x2-70-51-x0-30-34-x0-71-50-72 r:71-33-30-30-x0-x0-30-50-x3-70-x0",
        "r:50-50-30-31-52-71-30-70-x2-31-50 r:71-x0-32-30-51-70-30-72-70-31-31",
        "r:31-70-30-51-70-52-70-32-71-51-50 r:x2-x0-70-x3-x0-51-50-31-51-70-x0",
        "r:72-31-50-30-70-x0-x0-70-x1-50-50 r:50-51-32-50-50-70-x1-52-31-70-30",
        "m:50-51-52-50-50-70-x1-52-32-70-73 m:50-50-32-31-52-71-33-70-x2-31-50",
        "m:50-50-71-31-52-71-30-70-x2-31-50 c:50-51-32-50-50-52-x1-52-71-70-30",
        "c:50-51-32-50-70-70-x1-52-31-70-50 c:50-50-30-31-52-52-70-32-x2-31-50",
        "r:34-30-x1-x1-70-x1-30-31-31-x2-30 r:x2-x2-52-30-50-50-x0-50-31-x2-51",
        "m:32-51-52-50-50-70-x1-52-32-70-50 m:50-31-52-50-50-70-x1-52-32-70-73",
        "m:33-x2-52-51-72-50-x0-50-50-x2-51 c:x2-51-52-50-50-50-x1-52-32-70-51",
        "c:x2-51-52-50-50-52-x0-52-31-x2-51 c:50-51-32-50-50-70-x1-52-71-70-30",
        "r:33-x0-50-30-71-71-x1-30-70-32-33 r:33-32-70-31-70-50-33-x1-70-50-33",
        "m:x2-51-52-50-50-70-x1-52-32-70-51 m:x2-70-52-x0-50-50-x1-52-33-70-51",
        "m:x2-51-52-50-50-51-x1-52-32-70-51 c:33-51-52-51-50-50-x0-52-50-x2-51",
        "c:x2-51-52-50-50-50-x0-52-32-70-51 c:x2-51-52-51-50-50-x0-50-50-x2-51",
        "r:72-70-51-31-50-70-32-x1-30-32-50 r:x0-33-x3-x1-30-70-70-50-x1-31-x1",
    ],
    "random": [
        "r:72-30-70-70-31-50-71-x0-x1-50-73 r:x3-30-30-50-x0-x2-73-30-51-x0-x1",
        "r:70-x0-32-70-31-x2-51-31-50-51-52 r:x1-50-73-70-70-30-x1-31-30-50-30",
        "r:70-x0-30-x0-72-31-x1-72-50-50-50 r:x0-71-x1-50-x0-30-x1-70-x0-50-x0",
        "r:x2-71-70-50-50-31-70-72-31-50-73 r:x1-x1-x3-30-70-50-50-x1-x1-x1-30",
        "r:x3-52-x0-50-30-x0-x0-50-30-52-x0 r:50-50-50-x0-50-x0-50-30-x0-x3-70",
        "r:72-52-31-x0-x0-50-50-30-72-x0-32 r:32-71-51-x2-32-70-50-70-71-50-71",
        "r:71-31-x0-50-50-51-51-30-30-70-33 r:70-71-33-x0-33-50-30-52-x0-x0-70",
        "r:30-72-70-x1-30-x2-30-70-51-71-70 r:70-x0-72-71-70-70-30-31-71-51-70",
        "r:33-70-x1-31-54-x1-x0-51-50-70-x1 r:71-51-x0-50-70-50-50-53-51-52-x1",
        "r:x0-x2-50-x0-32-70-50-x0-73-x0-x0 r:70-70-31-x1-x0-52-51-x0-50-70-51",
        "r:30-70-70-x0-30-33-70-52-50-70-x1 r:x1-x0-30-x0-51-x0-72-50-x3-71-51",
        "r:33-70-x1-31-70-70-72-51-31-30-54 r:70-32-51-31-31-70-32-50-33-30-x2",
        "r:30-32-30-71-71-x3-70-70-30-50-32 r:31-52-51-x1-x0-50-72-31-72-30-51",
        "r:70-71-71-x1-51-50-x2-50-50-51-x1 r:x2-50-70-70-70-30-50-32-30-x0-30",
        "r:50-72-71-71-50-30-70-51-50-51-30 r:50-70-72-x1-51-51-32-32-x0-x0-x1",
        "r:30-50-31-73-33-70-32-71-30-30-50 r:71-71-31-30-71-30-50-x1-30-52-x0",
    ],
}


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_a_seeded_search_proposes_the_pinned_candidates(strategy):
    result = search(SPACE, mflops, fake_evaluate, REWARD, SearchConfig(**{**CFG, "strategy": strategy}), log=None)
    got = [f"{r['origin'][0]}:{r['arch']}" for r in result.records]
    assert got == " ".join(PINNED[strategy]).split()
    assert [r["generation"] for r in result.records] == [g for g in range(4) for _ in range(8)]
