"""bench/photos.py (issue 21) on the experiment runner, with fakes (no training, no data): the gallery
augmentation and the query candidate are chosen on validation only, finals are scored on test once
each (seed 0: gallery, chosen, BCT reference, independent, CMP-NAS; then the other seeds of the
chosen and BCT), a second call reruns nothing; the CMP-NAS search sees the training classes only;
the checks' helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import photos  # noqa: E402
import photos_checks  # noqa: E402
import protocols as P  # noqa: E402

from hetsearch.config import TrainRunConfig  # noqa: E402
from hetsearch.utils.typed_config import load_config  # noqa: E402

# a fake scorer where validation and test disagree: the choice must follow validation
VAL = {"bct": 0.50, "bct+photo_light": 0.55, "c+r_lf": 0.70, "c+r": 0.60, "independent+photo_light": 0.1}
TEST = {"bct": 0.65, "bct+photo_light": 0.52, "c+r_lf": 0.60, "c+r": 0.90, "independent+photo_light": 0.1}
GALLERY = {"basic": (0.80, 0.90), "photo_light": (0.85, 0.80)}   # (validation, test) M(g, g)


@pytest.fixture
def fake(monkeypatch):
    calls = []

    def run_job(settings, run):
        split = "val" if run.phase == "select" else "test"
        augment = "photo_light" if settings.gallery_overrides else "basic"
        label = "gallery" if run.method == "paragon" else photos.label_of(run.method)
        calls.append((run.phase, split, label, run.model, run.seed, augment, run.protocol))
        value = GALLERY[augment][split == "test"] if label == "gallery" else (VAL if split == "val" else TEST)[label]
        value += run.seed / 1000 + (0.01 if run.model == "cmpnas" else 0)
        p = "val_" if split == "val" else ""
        return {f"{p}recall_at_1": value, f"{p}map_at_r": value / 2, f"{p}homo_recall_at_1": 0.5,
                "query_model": f"{run.model}-{label}", "gallery_model": f"g-{augment}",
                "query_mflops": 70.1 if label == "gallery" else 1.87, "gallery_mflops": 70.1,
                "training_run": run.name, "settings_tag": settings.tag(), "split": split}

    def search_job(args, settings, run):
        calls.append(("select", "val", "search", run.model, run.seed, "", run.protocol))
        return {"arch": f"arch-{run.protocol}", "arch_mflops": 2.2}

    monkeypatch.setattr(P, "run_job", run_job)
    monkeypatch.setattr(P, "build_bank", lambda settings, run: {})
    monkeypatch.setattr(photos, "search_job", search_job)
    return calls


def _argv(tmp_path) -> list[str]:
    return ["--candidates", "bct,bct+photo_light,c+r_lf,c+r", "--select-epochs", "10", "--epochs", "30",
            "--seeds", "0,1,2", "--runs", str(tmp_path / "runs"), "--results", "ph", "--no-checks"]


def test_choices_on_validation_finals_on_test_once_and_resume(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # docs/results/ of the call
    photos.main(_argv(tmp_path))
    calls = fake
    assert {split for phase, split, *_ in calls if phase == "select"} == {"val"}
    assert {split for phase, split, *_ in calls if phase == "final"} == {"test"}
    finals = [c for c in calls if c[0] == "final"]
    assert len(finals) == len(set(finals))                               # each final configuration scored once
    assert {c[5] for c in calls if c[2] != "search" and c[0] == "final"} == {"photo_light"}  # chosen on validation
    for protocol in photos.PROTOCOLS:
        mine = {(c[2], c[3], c[4]) for c in finals if c[6] == protocol}
        q = photos.QUERY_MODEL
        assert mine == {("gallery", "gallery", 0), ("c+r_lf", q, 0), ("c+r_lf", q, 1), ("c+r_lf", q, 2),
                        ("bct+photo_light", q, 0), ("bct+photo_light", q, 1), ("bct+photo_light", q, 2),
                        ("independent+photo_light", q, 0), ("c+r_lf", "cmpnas", 0)}   # never c+r, best on test
    payload = json.loads((tmp_path / "docs" / "results" / "ph.json").read_text())
    assert payload["gallery_selection"]["chosen"] == "photo_light"
    chosen = payload["selection"]["closed_set"]
    assert (chosen["candidate"], chosen["bct_reference"]) == ("c+r_lf", "bct+photo_light")
    assert [c["candidate"] for c in chosen["candidates"]] == ["c+r_lf", "c+r", "bct+photo_light", "bct"]
    for row in payload["rows"]:
        for key in ("protocol", "seed", "epochs", "homo_recall_at_1", "query_mflops", "gallery_mflops", "git_revision"):
            assert key in row
    assert {c["protocol"] for c in payload["epochs_check"]} == set(photos.PROTOCOLS)   # the chosen at 30 epochs
    assert all(c["epochs"] == 30 and "val_recall_at_1" in c for c in payload["epochs_check"])
    accept = payload["acceptance"]["closed_set"]
    assert accept["seeds"] == 3 and accept["bct_seeds"] == 3 and accept["flops_ok"]
    assert accept["beats_bct_points"] == pytest.approx(100 * (0.60 - 0.52))
    calls.clear()
    photos.main(_argv(tmp_path))                                         # resumed: every run finished before
    assert calls == []


def test_labels_and_candidates():
    assert photos.label_of(photos.CANDIDATES["c+r_lf+photo_light"]) == "c+r_lf+photo_light"
    assert photos.label_of("none") == "independent"
    assert photos.label_of("none" + photos.CANDIDATES["bct+photo"][3:]) == "independent+photo"
    assert photos.label_of("bct@train.lr=1") == "bct@train.lr=1"        # not a candidate: the method itself
    for label, method in photos.CANDIDATES.items():                      # every candidate is a valid config
        cfg = load_config(TrainRunConfig, P.Settings(configs=photos.CONFIGS).configs_dir / "query_shufflenetv2_x0_5.yaml",
                          [f"compat.method={method.partition('@')[0]}", *P.split_method(method)[1]])
        assert cfg.data.source == "cifar10" and cfg.data.image_size == 32, label
    settings = photos.settings_of(photos.parse_args([]), "photo_light")
    assert settings.tag() != photos.settings_of(photos.parse_args([]), "basic").tag() != P.Settings().tag() == ""


def test_the_search_sees_the_training_classes_only(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(P, "train_model", lambda cfg: (seen.setdefault("supernet", cfg) and Path("sup.pt"),
                                                       {"train_seconds": 1.0}))
    monkeypatch.setattr(P, "splits_of", lambda cfg: f"splits of {cfg.data.protocol}")

    def run_search(cfg, splits, resume):
        seen["search"], seen["splits"] = cfg, splits
        cfg.run_dir.mkdir(parents=True)
        (cfg.run_dir / "best.json").write_text(json.dumps({"arch": "a-b", "mflops": 2.2}))
        return type("R", (), {"seconds": 1.0})()

    import hetsearch.nas.runner as nas_runner
    monkeypatch.setattr(nas_runner, "run_search", run_search)
    args = photos.parse_args(["--runs", str(tmp_path)])
    settings = photos.settings_of(args, "basic")
    row = photos.search_job(args, settings, photos.Run("open_set", "cmpnas", "search", 0, 10, "select", settings.tag()))
    assert row["arch"] == "a-b" and row["budget_mflops"] == 2.3
    sup, search = seen["supernet"], seen["search"]
    assert sup.data.protocol == search.data.protocol == "open_set" and sup.data.val_classes == 0
    assert seen["splits"] == "splits of open_set"     # the supernet's splits: train and val of the training classes
    final_gallery = str(P.gallery_path(settings, P.get_protocol("open_set"), "final"))
    assert sup.compat.gallery_model == search.gallery_model == final_gallery and sup.compat.method == "bct"
    assert sup.train.epochs == 10 and sup.data.source == "cifar10"


def test_template_diffs_and_cli_json(tmp_path):
    recipe = load_config(TrainRunConfig, photos_checks.TEMPLATES / "gallery.yaml", ["data.root=x"])
    same = load_config(TrainRunConfig, photos_checks.TEMPLATES / "gallery.yaml", ["data.root=y", "name=z"])
    assert photos_checks.config_diffs(same, recipe) == {}                # paths and names are not settings
    other = load_config(TrainRunConfig, photos_checks.TEMPLATES / "gallery.yaml", ["data.root=x", "train.epochs=3"])
    assert list(photos_checks.config_diffs(other, recipe)) == ["train.epochs"]
    assert photos_checks.json_out('data: a line\n{\n "metrics": {"recall_at_1": 0.5}\n}\n') == {
        "metrics": {"recall_at_1": 0.5}}


def test_template_run_against_the_mean_of_the_bench_seeds():
    """One `hetsearch train` run is one draw: it is compared with the mean of the recipe's seeds."""
    score = {"metrics": {"recall_at_1": 0.80}, "protocol": {"counts": {"query": 10}}}
    rows = [{"seed": 0, "recall_at_1": 0.8104}, {"seed": 1, "recall_at_1": 0.80}, {"seed": 2, "recall_at_1": 0.7996}]
    out = photos_checks.compare(score, rows)
    assert out["bench_recall_at_1"] == 0.8033 and out["difference_points"] == -0.33 and out["within_1_point"]
    assert out["difference_points_by_seed"] == [-1.04, 0.0, 0.04] and out["bench_recall_at_1_std"] == 0.0061
    assert not photos_checks.compare(score, rows[:1])["within_1_point"]     # 1.04 points from seed 0 alone
    args = photos.parse_args(["--runs", "x"])
    assert photos_checks.check_done("index", {"summary": "ran"}, args)
    assert not photos_checks.check_done("templates", {"summary": "not run: ..."}, args)
    assert not photos_checks.check_done("templates", {"summary": {"query": {}}}, args)   # seed 0 only: redone
    assert photos_checks.check_done("templates", {"summary": {"query": {}}, "bench_seeds": [0, 1, 2]}, args)


def test_templates_recipe_rows_and_the_check_gate(fake, tmp_path, monkeypatch):
    """The bench trains the image_folder templates' own recipe (on the CIFAR-10 source) as rows of their own;
    the templates check compares against them, and refuses when the templates changed since."""
    from hetsearch.utils.typed_config import dump_yaml

    monkeypatch.chdir(tmp_path)
    assert [r.seed for r in photos.template_runs(photos.parse_args(_argv(tmp_path)))[1]] == [0, 1, 2]
    args = photos.parse_args([*_argv(tmp_path)[:-1], "--template-seeds", "0"])
    bench = photos.Bench(args)
    (g_run,), (q_run,) = photos.template_runs(args)
    assert (g_run.model, q_run.model, q_run.method, q_run.epochs) == (
        "gallery", "mobilenetv3_small", "contrastive+relational", 30)
    settings, closed = photos.templates_settings(args), P.get_protocol("closed_set")
    recipes = {"gallery": P.gallery_config(settings, closed, "final"), "query": P.query_config(settings, closed, q_run)}
    templates = dict(zip(("gallery", "query"), photos_checks.template_configs(tmp_path / "export")))
    for name, recipe in recipes.items():
        assert recipe.data.source == "cifar10" and recipe.data.image_size == templates[name].data.image_size
        assert photos_checks.config_diffs(templates[name], recipe) == {}     # the same settings as the templates
    assert recipes["query"].compat.gallery_model == str(P.gallery_path(settings, closed, "final"))
    assert P.scoring_config(settings, closed, "final").data.source == "cifar10"   # scored on the same photos
    assert recipes["gallery"].name != "gallery"                              # never the bench's own gallery
    assert photos_checks.template_check(bench, None, {})["summary"].startswith("not run")
    bench.runner.run([g_run])
    bench.runner.run([q_run])
    rows = [r for r in bench.runner.rows() if r.get("settings_tag") == settings.tag()]
    assert sorted((r["candidate"], r["model"]) for r in rows) == [("templates", "gallery"),
                                                                  ("templates", "mobilenetv3_small")]
    recipes["query"].train.epochs = 3                                        # trained before the template changed
    for row, recipe in zip(sorted(rows, key=lambda r: r["model"]), (recipes["gallery"], recipes["query"])):
        folder = Path(settings.runs) / row["training_run"]
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(dump_yaml(recipe))
    check = photos_checks.template_check(bench, None, {})
    assert check["summary"].startswith("not run: the templates changed")
    assert check["diffs"] == {"gallery": {}, "query": {"train.epochs": {"template": 30, "bench": 3}}}
    assert not (tmp_path / "export").exists()                                # nothing exported before the gate
    bench.report()
    payload = json.loads((tmp_path / "docs" / "results" / "ph.json").read_text())
    assert [r["model"] for r in payload["templates_rows"]] == ["gallery", "mobilenetv3_small"]
