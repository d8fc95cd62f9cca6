"""bench/state.py: what a fresh checkout needs to resume a bench survives save -> restore."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import state  # noqa: E402


def test_rows_and_finished_galleries_round_trip(tmp_path):
    runs, saved = tmp_path / "runs", tmp_path / "state"
    (runs / "ga_rows").mkdir(parents=True)
    (runs / "ga_rows" / "final_x.json").write_text('{"recall_at_1": 0.9}')
    (runs / "checks").mkdir()
    (runs / "checks" / "index.json").write_text('{"summary": {"agree": true}}')   # a check that passed is not redone
    (runs / "gallery_open_set").mkdir()
    (runs / "gallery_open_set" / "model.pt").write_bytes(b"weights")
    (runs / "gallery_open_set" / "checkpoint_last.pt").write_bytes(b"optimizer state")
    (runs / "gallery_unfinished").mkdir()
    (runs / "gallery_unfinished" / "checkpoint_last.pt").write_bytes(b"half")
    (runs / "ga_closed_set_q").mkdir()
    (runs / "ga_closed_set_q" / "model.pt").write_bytes(b"query")
    state.save(runs, saved)
    fresh = tmp_path / "fresh"
    restored = state.restore(fresh, saved)
    assert (fresh / "ga_rows" / "final_x.json").read_text() == '{"recall_at_1": 0.9}'
    assert (fresh / "checks" / "index.json").exists()
    assert (fresh / "gallery_open_set" / "model.pt").read_bytes() == b"weights"
    assert not (fresh / "gallery_open_set" / "checkpoint_last.pt").exists()   # finished: not needed
    assert not (fresh / "ga_closed_set_q").exists()                           # a finished query model: its row holds it
    assert (fresh / "gallery_unfinished" / "checkpoint_last.pt").read_bytes() == b"half"   # resumes where it was
    assert state.restore(fresh, saved) == [] and len(restored) == 4          # restoring twice changes nothing


def test_unfinished_runs_resume_across_sessions_and_never_overwrite_progress(tmp_path):
    runs, saved = tmp_path / "runs", tmp_path / "state"
    training, search = runs / "ps_supernet_s0", runs / "ps_search_s0"
    nested = runs / "templates" / "abc" / "runs" / "my_images" / "query"
    for folder, files in ((training, {"checkpoint_last.pt": b"epoch 3", "config.yaml": b"c", "events.log": b"x"}),
                          (search, {"state.json": b"{}", "evaluated.jsonl": b"{}\n"}),
                          (nested, {"checkpoint_last.pt": b"epoch 1"})):
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
    state.save(runs, saved)
    fresh = tmp_path / "fresh"
    state.restore(fresh, saved)
    assert (fresh / "ps_supernet_s0" / "checkpoint_last.pt").read_bytes() == b"epoch 3"
    assert not (fresh / "ps_supernet_s0" / "events.log").exists()            # only what resuming needs
    assert (fresh / "ps_search_s0" / "evaluated.jsonl").exists()
    assert (fresh / "templates/abc/runs/my_images/query/checkpoint_last.pt").read_bytes() == b"epoch 1"
    (fresh / "ps_supernet_s0" / "checkpoint_last.pt").write_bytes(b"epoch 5")  # the resumed run went on
    state.restore(fresh, saved)
    assert (fresh / "ps_supernet_s0" / "checkpoint_last.pt").read_bytes() == b"epoch 5"
    (training / "model.pt").write_bytes(b"done")                                # finished: its row holds it
    state.save(runs, saved)
    assert not (saved / "unfinished" / "ps_supernet_s0").exists() and (saved / "unfinished" / "ps_search_s0").exists()


def test_keep_saves_the_query_models_later_runs_start_from(tmp_path):
    runs, saved = tmp_path / "runs", tmp_path / "state"
    for name in ("ga_open_set_shufflenetv2_x0_5_bct_s0_e30", "ga_open_set_sel_shufflenetv2_x0_5_bct_s0_e30",
                 "ga_closed_set_shufflenetv2_x0_5_bct_s0_e30"):
        (runs / name).mkdir(parents=True)
        (runs / name / "model.pt").write_bytes(name.encode())
    (runs / "ga_open_set_shufflenetv2_x0_5_c_s1_e30").mkdir()   # unfinished: no model.pt
    state.save(runs, saved, keep=("ga_open_set_shufflenetv2*",))
    fresh = tmp_path / "fresh"
    state.restore(fresh, saved)
    assert sorted(p.name for p in fresh.iterdir()) == ["ga_open_set_shufflenetv2_x0_5_bct_s0_e30"]
    assert (fresh / "ga_open_set_shufflenetv2_x0_5_bct_s0_e30" / "model.pt").read_bytes() == \
        b"ga_open_set_shufflenetv2_x0_5_bct_s0_e30"


def test_a_finished_search_keeps_its_record_for_the_plots(tmp_path):
    runs, saved = tmp_path / "runs", tmp_path / "state"
    search = runs / "ps_closed_set_search_r3_s1"
    search.mkdir(parents=True)
    for name, data in (("best.json", b'{"arch": "a"}'), ("evaluated.jsonl", b'{"arch": "a"}\n'),
                       ("state.json", b"{}"), ("pareto.png", b"png")):
        (search / name).write_bytes(data)
    state.save(runs, saved)
    fresh = tmp_path / "fresh"
    state.restore(fresh, saved)
    kept = fresh / "ps_closed_set_search_r3_s1"
    assert sorted(p.name for p in kept.iterdir()) == ["best.json", "evaluated.jsonl"]   # no resume state, no plot
    (kept / "evaluated.jsonl").write_bytes(b"redrawn\n")
    assert state.restore(fresh, saved) == [] and (kept / "evaluated.jsonl").read_bytes() == b"redrawn\n"
