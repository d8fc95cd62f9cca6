"""bench/runner.py, the resumable experiment runner (issue 20): a row file per finished run, resume
skips finished runs, failures do not stop the others, --jobs runs in spawned processes, and
selection reads validation metrics only."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from runner import Run, Runner, grid, method_slug, select_best, split_method  # noqa: E402


def _work(run: Run) -> dict:
    """A fake run (module level: picklable for the spawned workers of --jobs)."""
    if run.method == "broken":
        raise RuntimeError("boom")
    return {"val_recall_at_1": run.seed / 10, "query_model": f"{run.model}-{run.method}"}


def _timed_work(run: Run) -> dict:
    """A fake run that takes a moment and says when it started and ended (picklable)."""
    started = time.time()
    time.sleep(0.3)
    return {**_work(run), "started": started, "ended": time.time()}


def _runner(tmp_path, work=_work, **kw) -> Runner:
    return Runner(tmp_path / "rows", work, log=lambda line: None, revision="abc123", **kw)


def test_a_row_per_finished_run_and_resume_skips_finished_runs(tmp_path):
    calls, seen = [], []

    def work(run):
        calls.append(run.key)
        return _work(run)

    runs = grid(["closed_set"], ["m"], ["bct", "l2"], seeds=[0, 1], epochs=[3])
    runner = _runner(tmp_path, work, on_row=lambda row: seen.append((row["run"], len(runner.rows()))))
    rows = runner.run(runs)
    assert [r["run"] for r in rows] == [r.key for r in runs] and len(calls) == 4
    # each row was on disk before on_row was called (a bench rewrites its results there)
    assert seen == [(key, i + 1) for i, key in enumerate(calls)]
    row = json.loads((tmp_path / "rows" / f"{runs[0].key}.json").read_text())
    assert row["git_revision"] == "abc123" and row["protocol"] == "closed_set" and row["seed"] == 0
    assert row["epochs"] == 3 and row["phase"] == "final" and "command" in row and row["wall_s"] >= 0
    calls.clear()
    assert runner.run(runs) == rows and calls == []                 # all finished: nothing runs again
    (tmp_path / "rows" / f"{runs[1].key}.json").unlink()
    assert runner.run(runs) == rows and calls == [runs[1].key]      # only the missing one


def test_a_failed_run_writes_no_row_and_the_others_go_on(tmp_path):
    runner = _runner(tmp_path)
    runs = grid(["p"], ["m"], ["broken", "bct"], seeds=[0], epochs=[1])
    rows = runner.run(runs)
    assert [r["method"] for r in rows] == ["bct"]
    assert list(runner.failures) == [runs[0].key] and "boom" in runner.failures[runs[0].key]
    assert not (tmp_path / "rows" / f"{runs[0].key}.json").exists()


def test_jobs_run_in_parallel_processes(tmp_path):
    runs = grid(["p"], ["m"], ["bct", "broken"], seeds=[0, 1], epochs=[1])
    runner = _runner(tmp_path, jobs=2)  # threads=None: the workers need not import torch
    rows = runner.run(runs)
    assert sorted(r["run"] for r in rows) == sorted(r.key for r in runs if r.method == "bct")
    assert len(runner.failures) == 2


def _chain() -> tuple[Run, Run, Run, Run]:
    """supernet -> search -> retrain, and a run that needs nothing (listed last: lowest priority)."""
    supernet, search, retrain, hand = (Run("p", m, "bct", 0, 1) for m in ("supernet", "search", "retrain", "hand"))
    return supernet, search, retrain, hand


def _needs(run: Run) -> list[Run]:
    supernet, search, retrain, hand = _chain()
    return {search: [supernet], retrain: [search]}.get(run, [])


def test_needs_order_the_runs_and_a_failed_need_stops_only_its_dependents(tmp_path):
    calls = []

    def work(run):
        calls.append(run.model)
        return _work(run)

    supernet, search, retrain, hand = _chain()
    runner = _runner(tmp_path, work)
    rows = runner.run([retrain, search, supernet, hand], needs=_needs)
    assert calls == ["supernet", "search", "retrain", "hand"]     # a need first; then the declared order
    assert [r["model"] for r in rows] == ["retrain", "search", "supernet", "hand"]
    # the supernet fails: its search and retrain do not start, the hand-designed net still runs
    broken = Run("p", "supernet", "broken", 0, 1)
    search_b, retrain_b = Run("p", "search", "broken", 0, 1), Run("p", "retrain", "broken", 0, 1)
    needs = {search_b: [broken], retrain_b: [search_b]}
    calls.clear()
    rows = runner.run([retrain_b, search_b, broken, Run("p", "hand", "l2", 0, 1)], needs=lambda r: needs.get(r, []))
    assert calls == ["supernet", "hand"] and [r["model"] for r in rows] == ["hand"]
    assert set(runner.failures) == {broken.key, search_b.key, retrain_b.key}
    assert "did not finish" in runner.failures[retrain_b.key]
    # a need that is neither finished nor in the call: reported, not run
    lonely = Run("p", "search", "l2", 0, 1)
    assert runner.run([lonely], needs=lambda r: [Run("p", "supernet", "l2", 0, 1)]) == []
    assert "did not finish" in runner.failures[lonely.key]


def test_needs_with_jobs_keep_both_workers_busy_across_stages(tmp_path):
    supernet, search, retrain, hand = _chain()
    runner = _runner(tmp_path, _timed_work, jobs=2)
    rows = {r["model"]: r for r in runner.run([retrain, search, supernet, hand], needs=_needs)}
    assert set(rows) == {"supernet", "search", "retrain", "hand"} and not runner.failures
    assert rows["search"]["started"] >= rows["supernet"]["ended"]
    assert rows["retrain"]["started"] >= rows["search"]["ended"]
    # the run that needs nothing did not wait for the chain behind it in the declared order
    assert rows["hand"]["started"] < rows["search"]["started"]


def test_run_names_keys_and_method_variants():
    a = Run("open_set", "cmpnas", "contrastive@compat.gallery_aware.temperature=0.05", 2, 30, "select", "t1")
    assert split_method(a.method) == ("contrastive", ["compat.gallery_aware.temperature=0.05"])
    assert a.key == "select_" + a.name and a.name.startswith("open_set_cmpnas_contrastive_v")
    assert a.name.endswith("_s2_e30_t1") and method_slug("bct+l2") == "bct_l2"
    assert Run("open_set", "cmpnas", "bct", 0, 1, "final").name == Run("open_set", "cmpnas", "bct", 0, 1, "select").name
    with pytest.raises(ValueError, match="phase"):
        Run("p", "m", "bct", 0, 1, "test")
    assert [r.seed for r in grid(["p"], ["m"], ["a", "b"], seeds=[0, 1], epochs=[1])] == [0, 0, 1, 1]  # seeds outermost


def test_selection_uses_validation_metrics_only():
    # a fake scorer where validation and test disagree: "a" is best on validation, "b" on test
    rows = [{"phase": "select", "method": "a", "epochs": 30, "val_recall_at_1": 0.9, "val_map_at_r": 0.5,
             "recall_at_1": 0.1},
            {"phase": "select", "method": "b", "epochs": 30, "val_recall_at_1": 0.5, "val_map_at_r": 0.5,
             "recall_at_1": 0.99},
            {"phase": "select", "method": "b", "epochs": 60, "val_recall_at_1": 0.9, "val_map_at_r": 0.4}]
    best, table = select_best(rows)
    assert best == ("a", 30)                                   # tie on val Recall@1, broken by val MAP@R
    assert [t["candidate"] for t in table] == [("a", 30), ("b", 60), ("b", 30)]
    with pytest.raises(ValueError, match="not a validation metric"):
        select_best(rows, metric="recall_at_1")
    with pytest.raises(ValueError, match="not a select-phase row"):
        select_best([{**rows[0], "phase": "final"}])


def test_running_in_this_process_leaves_its_environment_and_threads_as_they_were(tmp_path, monkeypatch):
    """A test (or bench) process runs other things afterwards: the runner must not leak thread
    settings into os.environ (a child process started later would inherit them) or torch."""
    import os

    import torch

    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    _runner(tmp_path, threads=1).run([Run("p", "m", "a", 0, 1)])
    assert "MKL_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ
    assert torch.get_num_threads() == before
