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
    assert (fresh / "gallery_open_set" / "model.pt").read_bytes() == b"weights"
    assert not (fresh / "gallery_open_set" / "checkpoint_last.pt").exists()   # finished: not needed
    assert not (fresh / "gallery_unfinished").exists() and not (fresh / "ga_closed_set_q").exists()
    assert state.restore(fresh, saved) == [] and len(restored) == 2          # restoring twice changes nothing
