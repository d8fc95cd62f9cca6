"""bench/runner.py, the resumable experiment runner (issue 20): a row file per finished run, resume
skips finished runs, failures do not stop the others, --jobs runs in spawned processes, and
selection reads validation metrics only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from runner import Run, Runner, grid, method_slug, select_best, split_method  # noqa: E402


def _work(run: Run) -> dict:
    """A fake run (module level: picklable for the spawned workers of --jobs)."""
    if run.method == "broken":
        raise RuntimeError("boom")
    return {"val_recall_at_1": run.seed / 10, "query_model": f"{run.model}-{run.method}"}


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
