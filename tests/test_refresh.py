"""Catalogue refresh (`hetsearch refresh`, hetsearch.train.refresh): a query model fine-tuned,
label-free, on the items an index holds, mixed with a replay of its own training images.

Tiny runs through the CLI on a Fashion-MNIST subset (seconds): the plumbing, resume, the contract,
`index add` followed by a new refresh, and the one-line errors. What a refresh achieves is measured
by bench/refresh.py (docs/results/refresh.json), not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from index_fixtures import run_cli as run  # noqa: E402  (the CLI as a user runs it; its exit status)
from hetsearch.compat.bank import bank_from_index, build_bank
from hetsearch.compat.gallery import FrozenGallery
from hetsearch.compat.views import ItemViews
from hetsearch.data import ImageSet
from hetsearch.index.gallery import read_stored
from hetsearch.models import load_checkpoint
from hetsearch.models.checkpoint import read_checkpoint_file
from hetsearch.train.refresh import RefreshConfig, catalogue_sets, split_overrides


TINY = ["data.max_train_items=600", "data.max_test_items=200", "train.epochs=1", "train.batch_size=64",
        "train.max_steps_per_epoch=3", "runtime.progress=false", "runtime.device=cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny gallery model, a label-free query model against it, and an index of 120 test images."""
    root = tmp_path_factory.mktemp("refresh")
    runs = root / "runs"
    assert run("train", "configs/fashion_mnist/gallery.yaml", f"output_dir={runs}", "name=gallery", *TINY) == 0
    gallery = runs / "gallery" / "model.pt"
    assert run("train", "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml", f"output_dir={runs}", "name=query",
               "compat.method=contrastive", f"compat.gallery_model={gallery}", "compat.bank.views=2",
               "train.task_loss=none", *TINY) == 0
    index = root / "index"
    assert run("index", "build", "--gallery-model", gallery, "--dataset", "fashion_mnist:test", "--limit", 120,
               "--out", index, "--device", "cpu", "--no-progress") == 0
    return {"root": root, "runs": runs, "gallery": gallery, "query": runs / "query" / "model.pt", "index": index}


def test_refresh_trains_on_the_catalogue_plus_replay_and_keeps_the_contract(trained, capsys):
    out = trained["root"] / "refreshed"
    code = run("refresh", "--index", trained["index"], "--query-model", trained["query"], "--out", out,
               "--name", "r1", "epochs=1", "batch_size=32", "runtime.progress=false", "runtime.device=cpu",
               "--verify", "warn", "--install", trained["root"] / "served.pt")
    assert code == 0
    text = capsys.readouterr().out
    assert "verified against" in text
    assert (trained["root"] / "served.pt").read_bytes() == (out / "r1" / "model.pt").read_bytes()
    meta = read_checkpoint_file(out / "r1" / "model.pt")["meta"]
    query_meta = read_checkpoint_file(trained["query"])["meta"]
    assert meta["compatible_with"] == read_stored(trained["index"]).gallery_model_id
    assert meta["spec"] == query_meta["spec"]                   # same architecture, new weights
    assert meta["model_id"] != query_meta["model_id"]
    protocol = meta["extra"]["protocol"]
    assert protocol["protocol"] == "catalogue_refresh"
    assert protocol["catalogue_train"] + protocol["val"] == 120
    assert protocol["replay"] == protocol["catalogue_train"]     # replay 0.5: as many own images as catalogue ones
    history = [json.loads(line) for line in (out / "r1" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    # a finished refresh resumes to "done"; without --resume the folder is not overwritten
    assert run("refresh", "--index", trained["index"], "--query-model", trained["query"], "--out", out, "--name",
               "r1", "epochs=1", "batch_size=32", "runtime.progress=false", "runtime.device=cpu", "--resume",
               "--verify", "off") == 0
    assert run("refresh", "--index", trained["index"], "--query-model", trained["query"], "--out", out, "--name",
               "r1", "epochs=1", "runtime.device=cpu", "--verify", "off") == 2
    assert "--resume" in capsys.readouterr().err


def test_after_index_add_a_refresh_covers_the_new_items(trained, tmp_path):
    import shutil
    index = tmp_path / "index"
    shutil.copytree(trained["index"], index)
    before = read_stored(index)
    assert run("index", "add", "--index", index, "--dataset", "fashion_mnist:train", "--limit", 40,
               "--no-progress", "--device", "cpu") == 0
    after = read_stored(index)
    assert len(after.ids) == len(before.ids) + 40
    cfg = RefreshConfig(index=str(index), query_model=str(trained["query"]), val_fraction=0.0)
    spec = read_checkpoint_file(trained["query"])["meta"]["spec"]
    train, val = catalogue_sets(after, spec["in_chans"], spec["image_size"], val_fraction=0.0, max_val_items=0,
                                seed=0)
    assert len(train) == len(after.ids) and len(val) == 0
    assert set(after.sources) - set(before.sources) <= set(train.sources)
    # the default run name follows the index's content: another index version, another run
    code = run("refresh", "--index", index, "--query-model", trained["query"], "--out", tmp_path / "runs",
               "epochs=1", "batch_size=32", "runtime.progress=false", "runtime.device=cpu", "--verify", "off")
    assert code == 0 and cfg.validate() is cfg
    names = [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("refresh-")]
    assert len(names) == 1


def test_missing_training_items_are_embedded_by_the_gallery_model(trained):
    g = FrozenGallery.load(trained["gallery"])
    stored = read_stored(trained["index"])
    spec = load_checkpoint(trained["gallery"]).meta.spec
    cat, _ = catalogue_sets(stored, spec.in_chans, spec.image_size, val_fraction=0.0, max_val_items=0, seed=0)
    extra = ImageSet(images=torch.randint(0, 256, (5, *cat.images.shape[1:]), dtype=torch.uint8,
                                          generator=torch.Generator().manual_seed(0)),
                     labels=torch.zeros(5, dtype=torch.int64), classes=["x"], sources=[f"new:{i}" for i in range(5)])
    mixed = ImageSet(images=torch.cat([extra.images, cat.images[:10]]), labels=torch.zeros(15, dtype=torch.int64),
                     classes=["x"], sources=extra.sources + cat.sources[:10])
    calls = []

    def embed_missing(missing):
        calls.append(list(missing.sources))
        return build_bank(g, missing, views=ItemViews(), num_views=1, root=trained["root"] / "banks",
                          progress=False).array[:, 0]

    bank = bank_from_index(trained["index"], g.model_id, mixed, ItemViews(), embed_missing=embed_missing)
    assert calls == [extra.sources]                              # only the items the index lacks
    direct = build_bank(g, mixed, views=ItemViews(), num_views=1, root=trained["root"] / "banks2", progress=False)
    assert np.allclose(np.asarray(bank.array, np.float32), np.asarray(direct.array, np.float32), atol=3e-3)


@pytest.mark.parametrize("args, expected", [
    (["epochs=-1"], "refresh.epochs"),
    (["replay=1"], "refresh.replay"),
    (["nonsense=3"], "not a refresh option"),
    (["epochs"], "expected key=value"),
])
def test_bad_refresh_options_are_one_line_errors(trained, capsys, args, expected):
    code = run("refresh", "--index", trained["index"], "--query-model", trained["query"], *args, "--verify", "off")
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err


def test_a_gallery_model_that_did_not_build_the_index_is_refused(trained, tmp_path, capsys):
    other = tmp_path / "runs"
    assert run("train", "configs/fashion_mnist/gallery.yaml", f"output_dir={other}", "name=g2", "runtime.seed=5",
               *TINY) == 0
    code = run("refresh", "--index", trained["index"], "--query-model", trained["query"], "--gallery-model",
               other / "g2" / "model.pt", "--verify", "off")
    assert code == 2 and "was built by" in capsys.readouterr().err


def test_split_overrides_types_refresh_options():
    fields, training = split_overrides(["epochs=3", "lr=0.01", "runtime.device=cpu"])
    assert fields == {"epochs": 3, "lr": 0.01} and training == {"runtime.device": "cpu"}


def test_a_folded_affine_map_is_exactly_the_map_of_the_embedding():
    from hetsearch.models import create_model
    from hetsearch.models.linear_map import fold_affine_map

    torch.manual_seed(0)
    model = create_model("shufflenetv2_x0_5", num_classes=3, embedding_dim=16, in_chans=1, image_size=28)
    model.train()
    model(torch.rand(32, 1, 28, 28))          # BatchNorm statistics that are not the defaults
    model.eval()
    x = torch.rand(8, 1, 28, 28)
    matrix, bias = torch.randn(16, 16), torch.randn(16)
    with torch.no_grad():
        expected = model(x, normalize=False) @ matrix + bias
        fold_affine_map(model, matrix, bias)
        assert torch.allclose(model(x, normalize=False), expected, atol=1e-4)


def test_a_linear_only_refresh_fits_checks_and_folds_a_map(trained, capsys):
    out = trained["root"] / "linear"
    args = ["refresh", "--index", trained["index"], "--query-model", trained["query"], "--out", out, "--name", "lin",
            "epochs=0", "val_fraction=0.25", "runtime.device=cpu", "--verify", "off"]
    assert run(*args) == 0
    meta = read_checkpoint_file(out / "lin" / "model.pt")["meta"]
    fitted = meta["extra"]["linear_map"]
    assert fitted["fitted_on"] == 90 and fitted["validated_on"] == 30
    assert fitted["applied"] == (fitted["val_recall_at_1_after"] > fitted["val_recall_at_1_before"])
    query_meta = read_checkpoint_file(trained["query"])["meta"]
    assert (meta["model_id"] != query_meta["model_id"]) == fitted["applied"]
    assert meta["extra"]["protocol"]["replay"] == 0            # no fine-tuning, no replay loaded
    assert run(*args[:-2], "--resume", "--verify", "off") == 0  # done already: not fitted twice
    assert read_checkpoint_file(out / "lin" / "model.pt")["meta"]["model_id"] == meta["model_id"]
    assert run("refresh", "--index", trained["index"], "--query-model", trained["query"], "epochs=0",
               "linear=false", "--verify", "off") == 2
    assert "nothing to do" in capsys.readouterr().err


def test_term_weights_carry_over_only_for_the_terms_the_refresh_method_has():
    """A query model trained with relational weight 4 refreshed with l2 (no relational term) must not
    carry the weight into a config that then refuses it (the campaign's refresh-settings probe did)."""
    from hetsearch.config import TrainRunConfig
    from hetsearch.train.refresh import RefreshConfig, training_config
    from hetsearch.utils.typed_config import load_config

    base = load_config(TrainRunConfig, "configs/fashion_mnist/gallery.yaml",
                       ["compat.method=contrastive+relational", "compat.term_weights={relational: 4}"])
    for method, expected in (("l2", {}), ("contrastive+relational", {"relational": 4})):
        run = training_config(RefreshConfig(index="i", query_model="q.pt", method=method), base,
                              gallery_model="g.pt", run_name="r", output_dir="out")
        assert run.compat.method == method and run.compat.term_weights == expected
        run.compat.validate()
