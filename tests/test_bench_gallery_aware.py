"""bench/gallery_aware.py: which finished runs a call reports (every method/model/seed of the same
protocol, not only the call's --methods) and which throughput probe it shows with --probe-steps 0."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # the bench imports its sibling _shared
_SPEC = importlib.util.spec_from_file_location("bench_gallery_aware", BENCH / "gallery_aware.py")
ga = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ga)

GALLERIES = {"closed_set": "g-closed", "open_set": "g-open"}


def _args(**kw):
    base = {"epochs": 6, "set": [], "bn_recalibration": 20, "protocols": ["open_set"], "methods": ["none"]}
    return SimpleNamespace(**{**base, **kw})


def _row(**kw):
    base = {"protocol": "closed_set", "method": "bct", "model": "shufflenetv2_x0_5", "seed": 0, "epochs": 6,
            "gallery_model": "g-closed", "settings": {"set": [], "bn_recalibration": 20}}
    return {**base, **kw}


def test_rows_of_other_methods_models_seeds_and_protocols_are_kept():
    args = _args()  # a call with --protocols open_set --methods none
    for row in (_row(), _row(method="contrastive+relational", model="cmpnas", seed=2),
                _row(protocol="open_set", gallery_model="g-open", method="l2")):
        assert ga.same_protocol(row, args, GALLERIES)


def test_rows_of_another_protocol_are_dropped():
    args = _args()
    assert not ga.same_protocol(_row(epochs=30), args, GALLERIES)                 # other query epochs
    assert not ga.same_protocol(_row(gallery_model="g-old"), args, GALLERIES)     # other gallery
    assert not ga.same_protocol(_row(settings={"set": ["compat.weight=2"], "bn_recalibration": 20}), args, GALLERIES)
    assert not ga.same_protocol(_row(), args, {"open_set": "g-open"})            # its gallery is gone


def test_rows_written_before_settings_were_recorded_count_as_defaults():
    legacy = _row()
    del legacy["settings"]
    assert ga.same_protocol(legacy, _args(), GALLERIES)
    assert not ga.same_protocol(legacy, _args(bn_recalibration=0), GALLERIES)


def test_probe_steps_0_reports_the_stored_probe_of_the_same_set_and_device():
    old = json.dumps({"probe": 2, "set": [], "steps": 20, "device": None, "threads": None})
    other = json.dumps({"probe": 2, "set": ["compat.weight=2"], "steps": 20, "device": None, "threads": None})
    state = {"probes_by_settings": {old: {"bct": 2992.3}, other: {"bct": 1.0}}}
    now = json.dumps({"probe": 2, "set": [], "steps": 0, "device": None, "threads": 1})
    assert ga.stored_probes(state, now) == ({"bct": 2992.3}, old)
    assert ga.stored_probes({}, now) == ({}, now)
    assert ga.stored_probes(state, old) == ({"bct": 2992.3}, old)
