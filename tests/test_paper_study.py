"""bench/paper_study.py (issue 23) and its pieces: Kendall τ-b and the bootstrap on known inputs,
the Pareto front and plot written from a fake search log (what `hetsearch nas search` writes), and
the study itself on fakes (no training): every part runs, τ and verdicts land in the results,
the figures are written, a second call runs nothing, and the open-set search writes the arch in
the form `bench/gallery_aware.py --cmpnas-arch` takes. Seconds."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import paper_study as ps  # noqa: E402
import protocols as P  # noqa: E402
import stats  # noqa: E402

from hetsearch.errors import ConfigError  # noqa: E402
from hetsearch.nas.plots import pareto_front, plot_search  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- τ and the bootstrap

def test_kendall_tau_b_on_known_inputs():
    assert stats.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert stats.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one discordant pair of 6: (5 - 1) / 6
    assert stats.kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    # τ-b with a tie in x: 2 concordant pairs, 2 untied in x, 3 in y -> 2 / sqrt(6)
    assert stats.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(stats.kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(stats.kendall_tau([1], [2]))
    with pytest.raises(ValueError):
        stats.kendall_tau([1, 2], [1, 2, 3])


def test_kendall_tau_matches_scipy_with_ties():
    kendalltau = pytest.importorskip("scipy.stats").kendalltau
    rng = np.random.default_rng(0)
    for _ in range(10):
        x, y = rng.integers(0, 4, 15), rng.integers(0, 4, 15)
        assert stats.kendall_tau(x, y) == pytest.approx(kendalltau(x, y)[0])


def test_bootstrap_interval_on_known_inputs():
    x = np.arange(20.0)
    perfect = stats.tau_ci(x, 2 * x + 1)
    assert perfect["tau"] == 1.0 and perfect["lo"] == 1.0 and perfect["hi"] == 1.0 and perfect["n"] == 20
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=40), rng.normal(size=40)
    unrelated = stats.tau_ci(a, b)
    assert unrelated["lo"] < 0 < unrelated["hi"]
    assert stats.tau_ci(a, b) == unrelated                          # seeded: the same interval twice
    assert stats.tau_ci(a, b, seed=5) != unrelated
    noisy = stats.tau_ci(a, a + 0.3 * b)
    assert 0 < noisy["lo"] < noisy["tau"] < noisy["hi"] <= 1
    assert stats.tau_ci([1, 2], [2, 1])["lo"] is None                 # too few items for an interval


def test_paired_difference_and_means_in_standard_errors():
    y = np.arange(15.0)
    diff = stats.tau_difference_ci(y, -y, y)                         # a perfect vs a reversed predictor
    assert diff["diff"] == 2.0 and diff["lo"] == 2.0 and diff["hi"] == 2.0
    same = stats.tau_difference_ci(y, y, y)
    assert same["diff"] == 0.0 and same["lo"] == 0.0 == same["hi"]
    assert stats.compare_means([0.90, 0.91, 0.92], [0.80, 0.81, 0.79])["verdict"] == "a higher"
    assert stats.compare_means([0.80, 0.81, 0.79], [0.90, 0.91, 0.92])["verdict"] == "a lower"
    assert stats.compare_means([0.80, 0.90, 0.85], [0.84, 0.86, 0.85])["verdict"] == "within noise"
    assert stats.compare_means([0.9, 0.9], [0.8, 0.8, 0.8])["verdict"].startswith("unresolved")
    assert stats.mean_std([1.0, 3.0]) == {"n": 2, "mean": 2.0, "std": pytest.approx(math.sqrt(2))}


def test_no_association_findings_need_an_interval_that_rules_out_a_strong_ranking():
    args, done = ps.parse_args(["--retrain-paths", "12"]), {"retrained": 12, "planned": 12}
    y = np.arange(12.0)
    rng = np.random.default_rng(4)
    unrelated = stats.tau_ci(rng.permutation(y), y)                     # τ 0.21 on 12 paths: too wide to say
    assert unrelated["lo"] <= 0 and unrelated["hi"] >= ps.STRONG_TAU
    assert ps._weak_association(args, done, unrelated).startswith("unresolved: the interval admits")
    assert ps._weak_association(args, done, {"tau": 0.0, "lo": -0.3, "hi": 0.3}) == "held"
    assert ps._weak_association(args, done, stats.tau_ci(y, y + 0.1 * rng.random(12))) == "not held"
    assert ps._weak_association(args, {"retrained": 4, "planned": 12}, unrelated).startswith("unresolved: runs pending")


def test_f2_and_f3_are_untestable_when_a_retrain_s_seed_noise_swamps_the_paths():
    paths = [0.915, 0.917, 0.919, 0.921, 0.923, 0.925]
    noisy = ps.retest_noise([{"retrained_hetero": a, "retest_hetero": a - 0.003 + d}   # common offset: no noise
                             for a, d in zip(paths, (0.006, -0.006, 0.005, -0.005, 0.006, -0.006))], 6)
    assert noisy["tau_ceiling"] < ps.STRONG_TAU and ps._noise_bound({"retest": noisy}).startswith("unresolved: one retrain")
    clean = ps.retest_noise([{"retrained_hetero": a, "retest_hetero": a - 0.003} for a in paths], 6)
    assert clean["seed_std"] == pytest.approx(0, abs=1e-9) and clean["tau_ceiling"] == pytest.approx(1)
    assert ps._noise_bound({"retest": clean}) is None
    assert ps._noise_bound({"retest": {**noisy, "n": 2}}) is None   # too few retests to say
    # averaging k retrains per path shrinks the seed variance k-fold: the ceiling rises, short of 1
    some = ps.retest_noise([{"retrained_hetero": a, "retest_hetero": a + d / 3}
                            for a, d in zip(paths, (0.006, -0.006, 0.005, -0.005, 0.006, -0.006))], 6)
    assert 0 < some["tau_ceiling"] < some["tau_ceiling_mean_of_2"] < some["tau_ceiling_mean_of_3"] < 1
    assert noisy["tau_ceiling_mean_of_3"] == pytest.approx(0, abs=1e-6)   # no spread of the paths' own to find
    assert clean["tau_ceiling_mean_of_3"] == pytest.approx(1)
    assert ps._tau_ceiling(0.1, 0.1) == pytest.approx(0, abs=1e-6) and ps._tau_ceiling(None, 0.1) is None


def _wide(over_flops: dict, seed_std: float, path_std: float) -> dict:
    """A finished f_wide method record with the fields the findings read."""
    t = {"tau": 0.6, "lo": 0.2, "hi": 0.9, "n": 12}
    taus = [{"supernet_method": m, "supernet_score": sc, "retrained_score": "hetero", **t}
            for m in (ps.BEST_METHOD, ps.NO_COMPAT) for sc in ("homo", "hetero")]
    retest = {"n": 6, "seed_std": seed_std, "path_std": path_std, "seed_std_from": "the F study's retest",
              "tau_ceiling": ps._tau_ceiling(seed_std, path_std)}
    return {"retrained": 12, "planned": 12, "paths": [], "taus": taus, "retest": retest, "searched": [],
            "f3_difference": {"diff": 0.1, "lo": -0.2, "hi": 0.4}, "f1": {"flops": t, "homo": t},
            "search_vs_random": {"verdict": "unresolved"}, "flops_range": [0.93, 1.88], "over_flops": over_flops}


def test_f5_compares_the_supernet_with_flops_and_respects_the_noise_bound():
    args = ps.parse_args([])
    verdict = {}
    for name, d, noise in (("held", {"diff": 0.3, "lo": 0.05, "hi": 0.55, "n": 12}, (0.002, 0.006)),
                           ("within", {"diff": 0.1, "lo": -0.2, "hi": 0.4, "n": 12}, (0.002, 0.006)),
                           ("reversed", {"diff": -0.4, "lo": -0.7, "hi": -0.1, "n": 12}, (0.002, 0.006)),
                           ("noisy", {"diff": 0.1, "lo": -0.2, "hi": 0.4, "n": 12}, (0.002, 0.0024))):
        found = {f["id"]: f for f in ps.wide_findings(args, {"methods": {ps.BEST_METHOD: _wide(d, *noise)}})}
        assert "F4-wide" not in found and "0.93-1.88 MFLOPs" in found["F3-wide"]["claim"]
        verdict[name] = found["F5-wide"]["verdict"]
    assert verdict["held"] == "held" and verdict["within"] == "not held (within noise)"
    assert verdict["reversed"] == "not held (reversed)" and verdict["noisy"].startswith("unresolved: one retrain")
    # the f_wide noise line names where its seed noise came from
    assert "the F study's retest" in ps._fmt_retest(_wide({}, 0.002, 0.006)["retest"])


def test_wide_paths_are_one_per_flops_bin_and_leave_the_budget_draws_alone():
    study = ps.study_of(ps.parse_args(["--paths", "5"]))
    wide = study.wide()
    paths = ps.path_space(study)
    flops = [paths.mflops(paths.space.parse(a)) for a in ps.sampled_paths(wide)]
    width = (study.budget - study.wide_min_mflops) / study.wide_paths
    assert len(flops) == study.wide_paths == len(set(ps.sampled_paths(wide)))
    for i, f in enumerate(flops):   # the i-th path in the i-th equal bin of [wide_min_mflops, budget]
        assert study.wide_min_mflops + i * width - 1e-9 <= f <= study.wide_min_mflops + (i + 1) * width + 1e-9
    budget_flops = [paths.mflops(paths.space.parse(a)) for a in ps.sampled_paths(study)]
    assert len(budget_flops) == 5 and max(budget_flops) <= study.budget
    assert wide.paths_tag() != study.paths_tag() and study.of_paths_run(ps.paths_run(wide, "none")) == wide
    assert study.of_paths_run(ps.paths_run(study, "none")) == study
    with pytest.raises(ConfigError, match="raise min_mflops"):   # a bin the space cannot fill says what to change
        ps.sampled_paths(dataclasses.replace(wide, path_min_mflops=0.1))


# ----------------------------------------------------------------------------- the Pareto plot

def test_pareto_front_keeps_the_undominated_points_by_cost():
    points = [(1.0, 0.5), (2.0, 0.4), (1.5, 0.7), (3.0, 0.9), (1.5, 0.6), (0.8, 0.2)]
    assert pareto_front(points) == [5, 0, 2, 3]
    assert pareto_front([]) == []


def _fake_search_log(folder: Path, n: int = 25) -> dict:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"arch": f"a{i}", "mflops": float(rng.uniform(0.8, 1.9)), "cost": 0.0,
                "hetero_recall_at_1": float(rng.uniform(0.5, 0.8)), "homo_recall_at_1": float(rng.uniform(0.6, 0.85)),
                "generation": i // 10, "reward": 0.0} for i in range(n)]
    (folder / "evaluated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    best = max(records, key=lambda r: r["hetero_recall_at_1"])
    (folder / "best.json").write_text(json.dumps(best))
    return best


def test_the_pareto_plot_is_written_from_a_fake_search_log(tmp_path):
    _fake_search_log(tmp_path / "search")
    out = plot_search(tmp_path / "search", marks=[{"label": "ShuffleNetV2 x0.5", "mflops": 1.61,
                                                   "hetero_recall_at_1": 0.7, "homo_recall_at_1": 0.75}])
    assert out == tmp_path / "search" / "pareto.png" and out.read_bytes().startswith(PNG)
    other = plot_search(tmp_path / "search", tmp_path / "elsewhere.png", metric="recall_at_1")
    assert other.read_bytes().startswith(PNG)


def test_hetsearch_nas_plot_marks_other_nets(tmp_path):
    from typer.testing import CliRunner

    from hetsearch.nas.cli import nas_app

    _fake_search_log(tmp_path / "search")
    result = CliRunner().invoke(nas_app, ["plot", str(tmp_path / "search"), "--mark", "hand=1.6,0.7,0.75"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "search" / "pareto.png").read_bytes().startswith(PNG)
    bad = CliRunner().invoke(nas_app, ["plot", str(tmp_path / "search"), "--mark", "hand=1.6"])
    assert bad.exit_code != 0


# ----------------------------------------------------------------------------- the study on fakes

def _score(arch: str, salt: str = "") -> float:
    """A fake 'true' accuracy of an architecture, stable across calls."""
    return 0.5 + (zlib.crc32((arch + salt).encode()) % 1000) / 4000


@pytest.fixture
def fake_study(monkeypatch, tmp_path):
    """Every work function replaced by a fake that trains nothing; the study's own glue runs for real."""
    calls: list[str] = []

    def run_job(settings, run):
        calls.append(run.key)
        arch = dict(settings.cmpnas_arch).get(run.protocol, run.model)
        het, homo = _score(arch) + 0.01 * run.seed, _score(arch, "homo")
        if run.phase == "select":
            return {"val_recall_at_1": het, "val_homo_recall_at_1": homo, "query_mflops": 1.0 + _score(arch, "flops"),
                    "query_model": arch, "gallery_model": "g", "train_seconds": 1.0, "arch": arch}
        return {"recall_at_1": het, "map_at_r": het / 2, "homo_recall_at_1": homo, "homo_map_at_r": homo / 2,
                "query_model": arch, "gallery_model": "g", "query_mflops": 1.0 + het, "gallery_mflops": 57.0,
                "train_seconds": 1.0, "arch": arch}

    def supernet_job(study, run):
        calls.append(run.key)
        model = ps.run_folder(study, run) / "model.pt"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(b"supernet")
        return {"model_path": str(model), "train_seconds": 1.0}

    def search_job(study, run):
        calls.append(run.key)
        folder = ps.run_folder(study, run)
        best = _fake_search_log(folder, n=12)
        best.update(arch=f"{run.model}-{run.method[:3]}-{run.seed}", reward=1.0, evaluations=12)
        (folder / "best.json").unlink()   # a retrain reads its search's row (a fresh checkout restores rows)
        return {"arch": best["arch"], "mflops": best["mflops"], "val_reward": 1.0, "val_recall_at_1": 0.7,
                "val_homo_recall_at_1": 0.7, "evaluations": 12, "search_seconds": 1.0, "search_dir": str(folder),
                "supernet": "supernet.pt", "gallery_model_path": "g.pt", "reward": "r3", "budget_mflops": 1.9}

    def paths_job(study, run):
        calls.append(run.key)
        compat = run.method != ps.NO_COMPAT
        return {"paths": [{"arch": a, "mflops": 1.0, "homo_recall_at_1": _score(a, "noise"),
                           "hetero_recall_at_1": _score(a) if compat else 0.1} for a in ps.sampled_paths(study)]}

    monkeypatch.setattr(P, "run_job", run_job)
    for name, fake in (("supernet_job", supernet_job), ("search_job", search_job), ("paths_job", paths_job)):
        monkeypatch.setattr(ps, name, fake)
    monkeypatch.setattr(ps, "DRAW_EVERY_S", 1e9)   # figures drawn once per call, at its end
    argv = ["--runs", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--paths", "14",
            "--retrain-paths", "12", "--epochs", "2", "--supernet-epochs", "1", "--seeds", "0,1,2",
            "--gallery-epochs", "1"]
    return calls, argv, tmp_path


def test_the_study_runs_every_part_reports_tau_and_verdicts_and_resumes(fake_study):
    calls, argv, tmp_path = fake_study
    ps.main(argv)
    results = json.loads((tmp_path / "results" / "paper_study.json").read_text())
    assert results["runs_finished"] == results["runs_declared"] and not results["failures"]
    # one schedule: each run after what it needs; every seed's R3 and hand-designed net before the ablations
    args = ps.parse_args(argv)
    study, position = ps.study_of(args), {key: i for i, key in enumerate(calls)}
    for run in ps.declared_runs(args, study):   # (a retrain calls run_job with its own key; no failure above)
        assert all(position[need.key] < position[run.key] for need in ps.needs(study, run) if run.key in position)
    last_hand = max(i for i, k in enumerate(calls) if k.startswith("final_closed_set_shufflenetv2_x0_5_"))
    assert last_hand < min(i for i, k in enumerate(calls) if k.startswith("select_closed_set_search_r1_"))
    fm = results["f_study"]["methods"][ps.BEST_METHOD]
    assert fm["retrained"] == 12 and len(fm["paths"]) == 14
    compat = ps.find_tau(fm, ps.BEST_METHOD, "hetero", "hetero")
    assert compat["tau"] == 1.0 and compat["n"] == 12 and compat["lo"] == 1.0   # the fake supernet ranks perfectly
    retest = fm["retest"]   # the fake retrain: seed 1 scores each path 0.01 above seed 0, the order kept
    assert retest["n"] == 6 == retest["planned"] and retest["tau"] == 1.0
    assert retest["seed_std"] == pytest.approx(0, abs=1e-9) and retest["tau_ceiling"] == pytest.approx(1)
    assert sum("retest_hetero" in e for e in fm["paths"]) == 6
    assert [r["seed"] for r in fm["searched"]] == [0, 1, 2]   # each search's winner retrained beside the paths
    verdicts = {(f["id"], f["method"]): f["verdict"] for f in results["findings"]}
    assert fm["search_vs_random"]["n"] == [3, 12] and ("F4", ps.BEST_METHOD) in verdicts
    assert verdicts[("F3", ps.BEST_METHOD)] == "held"
    assert verdicts[("F2", ps.BEST_METHOD)] in ("held", "not held")
    summary = results["ablation"]["summary"]
    closed = {(s["method"], s["model"]) for s in summary if s["protocol"] == "closed_set"}
    searched = [v for v in ps.CLOSED_VARIANTS if v != ps.RANDOM]
    assert closed == {(m, f"cmpnas_{v}") for m in (ps.BEST_METHOD, "bct") for v in searched} | {
        (m, model) for m in (ps.BEST_METHOD, "bct") for model in ("shufflenetv2_x0_5", ps.RANDOM_PATH)}
    opened = {(s["method"], s["model"]) for s in summary if s["protocol"] == "open_set"}
    assert opened == {(ps.OPEN_METHOD, "cmpnas_r3"), (ps.OPEN_METHOD, "cmpnas_nocompat"),
                      (ps.OPEN_METHOD, "shufflenetv2_x0_5"), (ps.OPEN_METHOD, ps.RANDOM_PATH)}
    # the random path: drawn under the budget (no supernet, no search), one per seed, trained as the searched nets
    randoms = [r for r in results["rows"] if r["model"] == ps.RANDOM_PATH and r["protocol"] == "closed_set"
               and r["method"] == ps.BEST_METHOD]
    assert sorted(r["draw_seed"] for r in randoms) == [100, 101, 102] and len({r["arch"] for r in randoms}) == 3
    paths = ps.path_space(study)
    assert all(paths.mflops(paths.space.parse(r["arch"])) <= study.budget for r in randoms)
    claims = {(c["protocol"], c["a"], c["b"]) for c in results["ablation"]["comparisons"]}
    assert ("closed_set", "cmpnas_r3", ps.RANDOM_PATH) in claims and ("open_set", ps.RANDOM_PATH, "shufflenetv2_x0_5") in claims
    assert all(s["seeds"] == [0, 1, 2] and s["recall_at_1_std"] is not None for s in summary)
    assert all(r["git_revision"] and r["command"] for r in results["rows"])
    # every figure exists beside the Markdown, is linked from it, and names its runs' commands and seeds
    md = (tmp_path / "results" / "paper_study.md").read_text()
    names = {f["file"] for f in results["figures"]}
    assert names == {"paper_study_pareto.png", "paper_study_pareto_open_set.png", "paper_study_ablation.png",
                     f"paper_study_rank_{ps.method_slug(ps.BEST_METHOD)}.png",
                     f"paper_study_rank_wide_{ps.method_slug(ps.BEST_METHOD)}.png"}
    # f_wide: its own 12 paths (other runs than the F study's), each retrained, the F study's seed noise
    # borrowed; the fake supernet ranks them perfectly, the fake FLOPs do not: F3 and F5 hold there
    fw = results["f_wide_study"]["methods"][ps.BEST_METHOD]
    assert fw["retrained"] == 12 == len(fw["paths"]) and not {e["arch"] for e in fw["paths"]} & {
        e["arch"] for e in fm["paths"]}
    assert fw["retest"]["seed_std_from"] and fw["retest"]["n"] == 6 and fw["retest"]["tau_ceiling"] == pytest.approx(1)
    assert verdicts[("F3-wide", ps.BEST_METHOD)] == "held" and verdicts[("F5-wide", ps.BEST_METHOD)] == "held"
    assert ("F4-wide", ps.BEST_METHOD) not in verdicts and "Stratified paths" in md
    for fig in results["figures"]:
        assert (tmp_path / "results" / fig["file"]).read_bytes().startswith(PNG) and f"]({fig['file']})" in md
        assert fig["commands"] and fig["seeds"]
    # the open-set search's arch, in the form bench/gallery_aware.py --cmpnas-arch takes
    found = json.loads((tmp_path / "results" / "cmpnas_open_set.json").read_text())
    assert found["cmpnas_arch"] == f"open_set={found['arch']}" and found["val_classes"] == 2
    # resume: a second call runs nothing and reports the same rows
    n = len(calls)
    ps.main(argv)
    assert len(calls) == n
    assert json.loads((tmp_path / "results" / "paper_study.json").read_text())["rows"] == results["rows"]
    # a fresh checkout: the F study's path scoring is left to do, its supernet's weights are gone (rows
    # restored, the folder not): the supernet is trained again, its old row kept beside
    supernet, scoring = ps.supernet_run(study, "closed_set", ps.BEST_METHOD, 0), ps.paths_run(study, ps.BEST_METHOD)
    rows_dir = tmp_path / "runs" / "ps_rows"
    (rows_dir / f"{scoring.key}.json").unlink()
    (ps.run_folder(study, supernet) / "model.pt").unlink()
    del calls[:]
    ps.main(argv)
    assert calls == [supernet.key, scoring.key] and (rows_dir / f"{supernet.key}.json.lost").is_file()
    # the first seed's search folder is gone: the Pareto figure is drawn from the next seed's search
    (ps.run_folder(study, ps.search_run(study, "closed_set", ps.BEST_METHOD, "r3", 0)) / "evaluated.jsonl").unlink()
    ps.main([*argv, "--report-only"])
    figs = json.loads((tmp_path / "results" / "paper_study.json").read_text())["figures"]
    assert next(f for f in figs if f["file"] == "paper_study_pareto.png")["seeds"] == [1]


def test_open_search_alone_and_settings_change_the_runs(fake_study, monkeypatch):
    calls, argv, tmp_path = fake_study
    monkeypatch.setattr(sys, "argv", ["bench/paper_study.py", "--parts", "open_search"])
    ps.main([*argv, "--parts", "open_search"])
    found = json.loads((tmp_path / "results" / "cmpnas_open_set.json").read_text())
    assert found["search_run"].startswith("select_open_set_search_r3_") and found["seed"] == 0
    # a later call (another command line) reports the same search: the arch file is left as it is
    before = (tmp_path / "results" / "cmpnas_open_set.json").read_bytes()
    monkeypatch.setattr(sys, "argv", ["bench/paper_study.py", "--parts", "ablation"])
    ps.main([*argv, "--parts", "open_search"])
    assert (tmp_path / "results" / "cmpnas_open_set.json").read_bytes() == before
    study = ps.study_of(ps.parse_args(argv))
    other = ps.study_of(ps.parse_args([*argv, "--budget", "1.0"]))
    assert ps.search_run(study, "open_set", "bct", "r3", 0).key != ps.search_run(other, "open_set", "bct", "r3", 0).key
    assert ps.sampled_paths(study) == ps.sampled_paths(study) and len(set(ps.sampled_paths(study))) == 14
    assert ps.sampled_paths(other) != ps.sampled_paths(study)


def test_variants_restrict_what_runs_and_a_gallery_in_training_elsewhere_is_waited_for(fake_study, monkeypatch):
    calls, argv, tmp_path = fake_study
    args = ps.parse_args([*argv, "--variants", "r3"])
    study = ps.study_of(args)
    supernets, searches, retrains = ps.ablation_runs(args, study, "closed_set", 1, args.variants)
    assert [r.model for r in retrains] == ["cmpnas_r3", "cmpnas_r3", "shufflenetv2_x0_5", "shufflenetv2_x0_5"]
    assert {s.model for s in searches} == {"search_r3"} and {s.method for s in supernets} == {ps.BEST_METHOD, "bct"}
    assert len(ps.declared_runs(args, study)) == len(ps.declared_runs(ps.parse_args(argv), study))  # reports all
    # another process is training the closed-set gallery (fresh checkpoint, no model.pt): wait for it
    folder = P.gallery_path(study.settings, P.CLOSED_SET, "final").parent
    folder.mkdir(parents=True)
    (folder / "checkpoint_last.pt").write_bytes(b"x")
    slept = []
    monkeypatch.setattr(ps.time, "sleep", lambda s: (slept.append(s), (folder / "model.pt").write_bytes(b"m")))
    ps.wait_for_galleries(study, ["closed_set"])
    assert len(slept) == 1
    (folder / "model.pt").unlink()
    monkeypatch.setattr(ps, "BUSY_S", 0.0)          # a stale checkpoint: its trainer died, resume it here
    ps.wait_for_galleries(study, ["closed_set"])
    assert len(slept) == 1


def test_a_figure_whose_search_folder_is_gone_keeps_its_previous_entry(tmp_path):
    """A fresh checkout restores rows, not search folders: the Pareto figure drawn before stays listed."""
    import argparse

    args = argparse.Namespace(results_dir=str(tmp_path), results="ps")
    entry = {"file": "ps_pareto.png", "what": "Pareto front", "runs": ["r"]}
    (tmp_path / "ps.json").write_text(json.dumps({"figures": [entry, {"file": "ps_other.png"}]}))
    assert ps.previous_figures(args, "ps_pareto.png") == []          # the figure file itself is missing
    (tmp_path / "ps_pareto.png").write_bytes(b"png")
    assert ps.previous_figures(args, "ps_pareto.png") == [entry]
