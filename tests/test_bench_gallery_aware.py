"""bench/gallery_aware.py on the experiment runner (issue 20): candidates are scored on validation
only, the chosen configuration and the reference on test only, once each; a second call reuses
every finished run; the protocols' validation views share nothing with the test split."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import gallery_aware as ga  # noqa: E402
import protocols as P  # noqa: E402

from hetsearch.data import make_splits  # noqa: E402
from hetsearch.data.idx import encode_idx  # noqa: E402

VAL = {"a": 0.9, "b": 0.5, "bct": 0.3}    # a fake scorer: "a" is best on validation ...
TEST = {"a": 0.6, "b": 0.95, "bct": 0.7}  # ... "b" on test


@pytest.fixture
def fake_protocol(monkeypatch):
    calls = []

    def gallery(settings, protocol, phase):
        return SimpleNamespace(runtime=SimpleNamespace(seed=0), train=SimpleNamespace(epochs=2), phase=phase)

    def query_model(settings, protocol, run):
        return Path(f"{run.method}_{run.seed}.pt"), {"train_seconds": 1.0}

    def score(settings, protocol, run, q_path, g_path, split):
        calls.append((run.phase, split, run.method, run.seed, run.model))
        value = (VAL if split == "val" else TEST).get(run.method, 0.95) + run.seed / 100
        prefix = "val_" if split == "val" else ""
        return {f"{prefix}recall_at_1": value, f"{prefix}map_at_r": value / 2, f"{prefix}homo_recall_at_1": 0.5,
                f"{prefix}homo_map_at_r": 0.2, "query_model": str(q_path), "gallery_model": "g",
                "query_mflops": 1.0, "gallery_mflops": 50.0}

    monkeypatch.setattr(P, "train_model", lambda cfg: (Path(f"gallery_{cfg.phase}.pt"), {"train_seconds": 2.0}))
    monkeypatch.setitem(P.PROTOCOLS, "fake", P.Protocol("fake", "a fake protocol", data=(), select_data=(),
                                                        gallery=gallery, query_model=query_model, score=score))
    return calls


def test_select_on_validation_then_final_on_test_once(fake_protocol, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # docs/results/ of the call
    argv = ["--protocols", "fake", "--methods", "a,b", "--models", "shufflenetv2_x0_5,cmpnas", "--epochs", "30",
            "--seeds", "0,1,2", "--runs", str(tmp_path / "runs"), "--results", "ga"]
    ga.main(argv)
    calls = fake_protocol
    assert {split for phase, split, *_ in calls if phase == "select"} == {"val"}
    assert {split for phase, split, *_ in calls if phase == "final"} == {"test"}
    finals = [c for c in calls if c[0] == "final"]
    assert len(finals) == len(set(finals))                       # each final configuration scored once
    assert {c[2] for c in finals} == {"paragon", "a", "bct"}     # never "b", the best on test
    payload = json.loads((tmp_path / "docs" / "results" / "ga.json").read_text())
    chosen = payload["selection"]["fake"]
    assert (chosen["method"], chosen["epochs"]) == ("a", 30)
    assert [c["method"] for c in chosen["candidates"]] == ["a", "b"]
    assert chosen["candidates"][0]["val_recall_at_1"] == 0.9
    rows = payload["rows"]
    assert {(r["method"], r["model"]) for r in rows} == {("paragon", "gallery"), ("a", "shufflenetv2_x0_5"),
                                                         ("a", "cmpnas"), ("bct", "shufflenetv2_x0_5"),
                                                         ("bct", "cmpnas")}
    assert all(r["protocol"] == "fake" and r["git_revision"] and r["epochs"] in (2, 30) for r in rows)
    assert sorted(r["seed"] for r in rows if r["method"] == "a" and r["model"] == "cmpnas") == [0, 1, 2]
    assert all(r["chosen"] == (r["method"] == "a") for r in rows)
    assert {s["method"]: s["seeds"] for s in payload["summary"]} == {"a": 3, "bct": 3}
    calls.clear()
    ga.main(argv)                                                # resumed: every run finished before
    assert calls == []


def _fake_fashion_mnist(folder: Path) -> str:
    folder.mkdir()
    for prefix, n in (("train", 400), ("t10k", 200)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.repeat(labels[:, None, None] * 20, 28 * 28, axis=1).reshape(n, 28, 28).astype(np.uint8)
        for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            (folder / f"{name}.gz").write_bytes(gzip.compress(encode_idx(array)))
    return str(folder)


@pytest.mark.parametrize("name", ["closed_set", "open_set"])
def test_validation_views_share_nothing_with_the_test_split(name, tmp_path):
    settings = P.Settings(runs=str(tmp_path / "runs"), data_dir=_fake_fashion_mnist(tmp_path / "fm"))
    protocol = P.get_protocol(name)
    splits = make_splits(P.gallery_config(settings, protocol, "select").data)
    view = P.validation_view(splits, name)
    test = set(splits.query.sources)  # the test images (the closed-set test gallery is the training split)
    assert not (set(view.query.sources) | set(view.gallery.sources)) & test
    assert view.query is splits.val and not set(view.query.sources) & set(splits.train.sources)
    classes = lambda s: set(s.labels.tolist())  # noqa: E731
    if name == "open_set":   # class-disjoint: validation classes are neither trained nor tested
        assert view.gallery is splits.val and view.exclude_self
        assert not classes(splits.val) & (classes(splits.train) | classes(splits.query))
        assert len(classes(splits.val)) == 2 and len(classes(splits.train)) == 3
    else:                    # held-out training images against the trained images
        assert view.gallery is splits.train and not view.exclude_self
    final = make_splits(P.gallery_config(settings, protocol, "final").data)
    assert final.test_classes == splits.test_classes            # the test split does not move between phases


def test_a_protocol_is_one_entry_and_can_share_another_protocols_galleries(monkeypatch, tmp_path):
    # the shape of the catalogue-refresh protocol: the open set's galleries, its own scoring data
    extra = P.Protocol("open_set_extra", "the open set, scored on the catalogue", gallery_of="open_set",
                       data=(*P.OPEN_SET.data, "data.max_test_items=50"), select_data=P.OPEN_SET.select_data)
    monkeypatch.setitem(P.PROTOCOLS, extra.name, extra)
    settings = P.Settings(runs=str(tmp_path))
    for phase in ("select", "final"):
        assert P.gallery_path(settings, extra, phase) == P.gallery_path(settings, P.OPEN_SET, phase)
    assert P.scoring_config(settings, extra, "final").data.max_test_items == 50
    assert P.scoring_config(settings, P.OPEN_SET, "final").data.max_test_items is None
    first, second = ga.gallery_batches(settings, ["closed_set", "open_set", "open_set_extra"])
    assert [(r.protocol, r.phase) for r in first] == [("closed_set", "final"), ("open_set", "final"),
                                                      ("open_set", "select")]   # each gallery trained once
    assert {(r.protocol, r.phase) for r in second} == {("open_set_extra", "final"), ("closed_set", "select"),
                                                       ("open_set_extra", "select")}


def test_a_given_cmpnas_arch_gets_its_own_runs():
    default, given = P.Settings(), P.Settings(cmpnas_arch=(("open_set", "30-30-30"),))
    assert P.run_tag(default, "open_set", "cmpnas") == "" == P.run_tag(given, "closed_set", "cmpnas")
    assert P.run_tag(given, "open_set", "cmpnas").startswith("a")
    assert P.run_tag(given, "open_set", "shufflenetv2_x0_5") == ""
    assert P.model_recipe(given, "open_set", "cmpnas")[2] == {"arch": "30-30-30", "arch_searched_on": "open_set"}
    runs = ga.tagged(given, [ga.Run("open_set", "cmpnas", "bct", 0, 30),
                             ga.Run("open_set", "shufflenetv2_x0_5", "bct", 0, 30)])
    assert runs[0].key != ga.Run("open_set", "cmpnas", "bct", 0, 30).key and runs[1].tag == ""


def test_refresh_options_ride_on_the_method_and_share_the_model_they_start_from():
    method, options = P.split_refresh("contrastive+relational@train.task_loss=none&refresh.epochs=3&refresh.replay=0.25")
    assert method == "contrastive+relational@train.task_loss=none"
    assert options == {"epochs": 3, "replay": 0.25}
    assert P.split_refresh("bct") == ("bct", P.REFRESH_DEFAULTS)
    run = P.Run("open_set_refresh", "shufflenetv2_x0_5", "bct@refresh.epochs=1", 0, 30, "final")
    base = P.training_run(run)
    assert (base.protocol, base.method) == ("open_set", "bct")
    settings = P.Settings()
    # the open-set model a refresh starts from is the open-set protocol's own run (trained once)
    assert P.query_run_name(settings, P.OPEN_SET, base) == P.query_run_name(
        settings, P.OPEN_SET, P.Run("open_set", "shufflenetv2_x0_5", "bct", 0, 30, "final"))
    assert P.get_protocol("open_set_refresh").gallery_of == "open_set"
    assert "data.gallery=catalogue" in P.get_protocol("open_set_refresh").data


def test_the_map_protocol_starts_from_the_open_set_model_and_indexes_training_images_only(tmp_path, monkeypatch):
    run = P.Run("open_set_map", "shufflenetv2_x0_5", "bct", 0, 30, "select")
    base = P.training_run(run)
    settings = P.Settings(runs=str(tmp_path / "runs"), data_dir=_fake_fashion_mnist(tmp_path / "fm"))
    assert (base.protocol, base.method) == ("open_set", "bct")
    assert P.query_run_name(settings, P.OPEN_SET, base) == P.query_run_name(
        settings, P.OPEN_SET, P.Run("open_set", "shufflenetv2_x0_5", "bct", 0, 30, "select"))
    closed = P.training_run(P.Run("closed_set_map", "shufflenetv2_x0_5", "bct", 0, 30, "select"))
    assert closed.protocol == "closed_set" and P.get_protocol("closed_set_map").gallery_of == "closed_set"
    protocol = P.get_protocol("open_set_map")
    assert protocol.gallery_of == "open_set" and protocol.score is P.score_pair
    indexed = {}
    monkeypatch.setattr("hetsearch.index.build_index", lambda folder, model, items: indexed.update(items=items))
    monkeypatch.setattr("hetsearch.models.load_checkpoint", lambda path: None)
    P.catalogue_index(settings, protocol, "select", which="training")
    splits = make_splits(P.scoring_config(settings, protocol, "select").data)
    assert set(indexed["items"].sources) == set(splits.train.sources)      # no validation-class image in the map's fit
    assert not set(indexed["items"].sources) & (set(splits.val.sources) | set(splits.query.sources))


def test_extra_methods_are_candidates_of_their_protocol_only(fake_protocol, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import dataclasses
    monkeypatch.setitem(P.PROTOCOLS, "fake2", dataclasses.replace(P.PROTOCOLS["fake"], name="fake2"))
    ga.main(["--protocols", "fake,fake2", "--methods", "a,b", "--extra-methods", "fake2=c", "--models",
             "shufflenetv2_x0_5", "--epochs", "30", "--seeds", "0", "--runs", str(tmp_path / "runs"), "--results", "ga"])
    selects = {c[2] for c in fake_protocol if c[0] == "select"}
    assert selects == {"paragon", "a", "b", "c"}
    assert sum(1 for c in fake_protocol if c[0] == "select" and c[2] == "c") == 1   # fake2's candidate only
    payload = json.loads((tmp_path / "docs" / "results" / "ga.json").read_text())
    assert payload["selection"]["fake"]["method"] == "a"       # c (0.95 on validation) never ran here
    assert payload["selection"]["fake2"]["method"] == "c"
    assert payload["candidates"] == {"fake": ["a", "b"], "fake2": ["a", "b", "c"]}
    with pytest.raises(SystemExit):
        ga.parse_args(["--extra-methods", "nonsense=c"])


def test_one_gallery_model_scored_on_two_protocols_embeds_each_protocols_images(monkeypatch, tmp_path):
    """The open set's test gallery and the refresh's catalogue are both embedded by the open-set gallery
    model: scoring one after the other in a process must not reuse the other's gallery embeddings."""
    import hetsearch.eval.report as report
    import hetsearch.models as models

    embedded = []

    def fake_evaluate(query, gallery, splits, device, embedding_cache):
        key = (gallery.meta.model_id, "gallery")
        if key not in embedding_cache:
            embedding_cache[key] = splits.gallery
        embedded.append(embedding_cache[key] == splits.gallery)   # the embeddings of this very image set
        return {"metrics": {"recall_at_1": 0.5, "map_at_r": 0.25}}

    model = SimpleNamespace(meta=SimpleNamespace(model_id="g", flops=2e6))
    monkeypatch.setattr(report, "evaluate_loaded", fake_evaluate)
    monkeypatch.setattr(models, "load_checkpoint", lambda path: model)
    monkeypatch.setattr(P, "splits_of", lambda cfg: SimpleNamespace(query=[0], gallery=[repr(cfg.data)]))
    settings = P.Settings(runs=str(tmp_path))
    for name in ("open_set", "open_set_refresh", "open_set"):
        run = P.Run(name, "gallery", "paragon", 0, 15, "final")
        P.score_pair(settings, P.get_protocol(name), run, Path("g.pt"), Path("g.pt"), "test")
    assert all(embedded) and len(embedded) == 6
