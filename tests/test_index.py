"""Gallery index: build/add/remove/rebuild, FAISS index types, metadata, the model contract, the
query CLI, and crash safety of writes (a writer killed at each phase of a write)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hetsearch.errors import CompatibilityError, HetsearchError
from hetsearch.index import (GalleryItems, IndexOpenError, IndexWriteError, add_items, build_index, csv_items,
                             dataset_items, embed_images, folder_items, open_index, rebuild_index, remove_items)
from hetsearch.index.storage import backup_path
from index_fixtures import make_items, make_tiny_models, write_image_folder
from hetsearch.models import load_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def gallery(models):
    return load_checkpoint(models.gallery)


@pytest.fixture(scope="module")
def query(models):
    return load_checkpoint(models.query)


def test_build_writes_manifest_metadata_and_searches(tmp_path, gallery, query):
    items = make_items(30)
    manifest = build_index(tmp_path / "idx", gallery, items)
    assert set(os.listdir(tmp_path / "idx")) == {"manifest.json", "index.faiss", "metadata.sqlite", "ids.npy",
                                                "vectors.npy", "thumbnails.npy"}
    on_disk = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert on_disk == manifest
    for key, value in {"format_version": 1, "gallery_model_id": gallery.meta.model_id, "embedding_dim": 16,
                       "normalization": "l2", "metric": "inner_product", "index_type": "flat",
                       "item_count": 30}.items():
        assert manifest[key] == value, key
    assert manifest["created_at"] and manifest["index_params"] == {}

    index = open_index(tmp_path / "idx", query_meta=gallery.meta)  # the gallery model itself may query
    emb = embed_images(gallery.model, items.images[:4])
    hits = index.search(emb, 5)
    assert [row[0].id for row in hits] == [0, 1, 2, 3]  # each gallery image finds itself first
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1][0].label == items.labels[1] and hits[1][0].source == "item1" and hits[1][0].fields == {"n": 1}
    assert index.item(7) == {"source": "item7", "label": items.labels[7], "fields": {"n": 7}}
    assert index.item(999) is None
    assert np.array_equal(index.thumbnail(5), items.images[5].numpy())
    assert index.thumbnail(999) is None
    # a compatible query model opens the index without warnings
    assert open_index(tmp_path / "idx", query_meta=query.meta).warnings == []
    with pytest.raises(IndexWriteError, match="already exists"):
        build_index(tmp_path / "idx", gallery, items)
    build_index(tmp_path / "idx", gallery, make_items(5), overwrite=True)
    assert len(open_index(tmp_path / "idx")) == 5


@pytest.mark.parametrize("index_type, params", [("ivf", {"nlist": 4, "nprobe": 4}),
                                                ("hnsw", {"M": 8, "efConstruction": 40, "efSearch": 64})])
def test_ann_indexes_match_exact_on_small_galleries(tmp_path, gallery, index_type, params):
    items = make_items(120, seed=1)
    vectors = embed_images(gallery.model, items.images)
    build_index(tmp_path / "flat", gallery, items, vectors=vectors)
    manifest = build_index(tmp_path / "ann", gallery, items, index_type=index_type, params=params, vectors=vectors)
    assert manifest["index_type"] == index_type and manifest["index_params"] == params
    exact, ann = open_index(tmp_path / "flat"), open_index(tmp_path / "ann")
    _, exact_ids = exact.search_ids(vectors[:20], 10)
    _, ann_ids = ann.search_ids(vectors[:20], 10)
    # nprobe = nlist and a large efSearch on 120 items: the ANN indexes are exact here
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_ids, ann_ids)]) >= 0.99
    # search-time parameters can be overridden at open
    key = "nprobe" if index_type == "ivf" else "efSearch"
    assert open_index(tmp_path / "ann", search_params={key: 2}).manifest["search_params"] == {key: 2}


def test_bad_index_parameters_are_refused(tmp_path, gallery):
    with pytest.raises(HetsearchError, match="does not apply"):
        build_index(tmp_path / "x", gallery, make_items(5), index_type="flat", params={"nlist": 3})
    with pytest.raises(HetsearchError, match="expected one of"):
        build_index(tmp_path / "x", gallery, make_items(5), index_type="lsh")
    with pytest.raises(HetsearchError, match="positive integer"):
        build_index(tmp_path / "x", gallery, make_items(5), index_type="hnsw", params={"M": 0})
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_add_and_remove_update_incrementally(tmp_path, gallery, index_type):
    items = make_items(40)
    build_index(tmp_path / "idx", gallery, items, index_type=index_type,
                params={"nlist": 2, "nprobe": 2} if index_type == "ivf" else None)
    manifest, new_ids = add_items(tmp_path / "idx", gallery, make_items(6, seed=5, prefix="new"))
    assert new_ids == list(range(40, 46)) and manifest["item_count"] == 46 and manifest["revision"] == 2
    manifest, removed = remove_items(tmp_path / "idx", ids=[0, 41], sources=["item3"])
    assert removed == [0, 3, 41] and manifest["item_count"] == 43
    index = open_index(tmp_path / "idx")
    assert len(index) == 43 and index.index.ntotal == 43
    assert index.item(0) is None and index.item(41) is None and index.item(42)["source"] == "new2"
    emb = embed_images(gallery.model, items.images[:4])
    _, ids = index.search_ids(emb, 43)
    assert 0 not in ids and 3 not in ids
    assert index.search(emb[1:2], 1)[0][0].id == 1
    # new ids never reuse removed ones
    _, more = add_items(tmp_path / "idx", gallery, make_items(1, prefix="again"))
    assert more == [46]
    with pytest.raises(HetsearchError, match="no items with id/source 999"):
        remove_items(tmp_path / "idx", ids=[999, 1], strict=True)
    assert len(open_index(tmp_path / "idx")) == 44  # nothing removed
    # without strict, an unknown id is reported and the known ones are removed
    manifest, removed = remove_items(tmp_path / "idx", ids=[999, 1, 2**70])
    assert removed == [1] and sorted(manifest["history"][-1]["not_found"]) == sorted(["999", str(2**70)])
    with pytest.raises(HetsearchError, match="nothing removed"):
        remove_items(tmp_path / "idx", ids=[999])


def test_rebuild_changes_type_without_reembedding(tmp_path, gallery):
    build_index(tmp_path / "idx", gallery, make_items(50))
    before = np.load(tmp_path / "idx" / "vectors.npy")
    manifest = rebuild_index(tmp_path / "idx", "hnsw", {"efSearch": 100})
    assert manifest["index_type"] == "hnsw" and manifest["index_params"]["efSearch"] == 100
    assert np.array_equal(np.load(tmp_path / "idx" / "vectors.npy"), before)
    assert open_index(tmp_path / "idx").search(before[7:8], 1)[0][0].id == 7


def test_add_needs_the_same_gallery_model(tmp_path, gallery, models):
    build_index(tmp_path / "idx", gallery, make_items(5))
    with pytest.raises(CompatibilityError, match=gallery.meta.model_id):
        add_items(tmp_path / "idx", load_checkpoint(models.stranger), make_items(2))


def test_model_contract(tmp_path, gallery, query, models):
    build_index(tmp_path / "idx", gallery, make_items(8))
    stranger = load_checkpoint(models.stranger).meta
    with pytest.raises(CompatibilityError) as info:
        open_index(tmp_path / "idx", query_meta=stranger)
    message = str(info.value)
    assert stranger.model_id in message and gallery.meta.model_id in message
    assert "compat.gallery_model=" in message and "--allow-incompatible" in message
    index = open_index(tmp_path / "idx", query_meta=stranger, allow_incompatible=True)
    assert len(index.warnings) == 1 and "not trained to be compatible" in index.warnings[0]
    # different embedding dimensions can never be compared, --allow-incompatible or not
    wide = make_tiny_models(tmp_path / "wide", embedding_dim=8)
    with pytest.raises(CompatibilityError, match="dimensions"):
        open_index(tmp_path / "idx", query_meta=wide.query_meta, allow_incompatible=True)


def test_open_errors_name_the_problem(tmp_path, gallery):
    with pytest.raises(IndexOpenError, match="no such index folder"):
        open_index(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexOpenError, match="no manifest.json"):
        open_index(tmp_path / "empty")
    build_index(tmp_path / "idx", gallery, make_items(3))
    (tmp_path / "idx" / "vectors.npy").unlink()
    with pytest.raises(IndexOpenError, match="vectors.npy: file is missing; .*hetsearch index build"):
        open_index(tmp_path / "idx")


def test_item_sources_folder_csv_and_dataset(tmp_path, gallery):
    paths = write_image_folder(tmp_path / "imgs", n=8)
    (tmp_path / "imgs" / "loose.png").write_bytes(paths[0].read_bytes())
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    items = folder_items(tmp_path / "imgs", 1, 16)
    assert len(items) == 9 and items.images.shape[1:] == (1, 16, 16)
    assert items.labels[items.sources.index(str(paths[1]))] == "square"
    assert items.labels[items.sources.index(str(tmp_path / "imgs" / "loose.png"))] is None

    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "list.csv").write_text(f"path,label,colour\nimgs/circle/000.png,round,red\n{tmp_path}/bad.png,x,y\n")
    with pytest.raises(HetsearchError, match="bad.png"):
        csv_items(tmp_path / "list.csv", 1, 16)
    items = csv_items(tmp_path / "list.csv", 1, 16, on_bad_image="skip")
    assert items.labels == ["round"] and items.fields == [{"colour": "red"}] and len(items.skipped) == 1

    root = tmp_path / "fmnist"
    root.mkdir()
    from hetsearch.data.idx import encode_idx

    for prefix, n in (("train", 12), ("t10k", 4)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.random.default_rng(0).integers(0, 255, (n, 28, 28), dtype=np.uint8)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(labels)))
    items = dataset_items("fashion_mnist:train", 1, 16, root=str(root), limit=10)
    assert len(items) == 10 and items.sources[3] == "fashion_mnist:train:3" and items.labels[1] == "Trouser"
    assert items.images.shape[1:] == (1, 16, 16)
    with pytest.raises(HetsearchError, match="SOURCE:SPLIT"):
        dataset_items("fashion_mnist", 1, 16)


# ---------------------------------------------------------------- crash safety

WRITER = textwrap.dedent("""
    # Imports once, then forks one writer process per phase (an `index add`), each told to pause
    # at its phase; the test SIGKILLs the writers there.
    import json, os, sys
    import torch
    from hetsearch.index import GalleryItems, add_items
    from hetsearch.index.storage import PAUSE_ENV
    from hetsearch.models import load_checkpoint
    jobs, gallery_path = json.loads(sys.argv[1]), sys.argv[2]
    gallery = load_checkpoint(gallery_path)
    children = []
    for phase, folder in jobs.items():
        pid = os.fork()
        if pid == 0:
            torch.set_num_threads(1)
            os.environ[PAUSE_ENV] = phase
            images = torch.full((7, 1, 16, 16), 200, dtype=torch.uint8)
            add_items(folder, gallery, GalleryItems(images=images, sources=[f"late{i}" for i in range(7)],
                                                    labels=[None] * 7))
            os.write(1, f"FINISHED {phase}\\n".encode())
            os._exit(0)
        os.write(1, f"CHILD {phase} {pid}\\n".encode())
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
""")
PHASES = ["copied", "writing", "before_swap", "after_backup", "after_swap"]


def test_killed_writer_leaves_a_complete_index(tmp_path, gallery, models):
    """SIGKILL a writer (`index add`) at every phase of the write: afterwards the index opens intact,
    with the previous content (or the new one, once the swap happened), and accepts new writes."""
    folders = {phase: tmp_path / phase / "idx" for phase in PHASES}
    for folder in folders.values():
        build_index(folder, gallery, make_items(20))
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    launcher = subprocess.Popen([sys.executable, str(script), json.dumps({p: str(f) for p, f in folders.items()}),
                                 str(models.gallery)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids, paused = {}, set()
    try:
        while len(paused) < len(PHASES) or len(pids) < len(PHASES):
            line = launcher.stdout.readline()
            assert line, f"writer launcher ended early: {launcher.stderr.read()}"
            if not line.strip():
                continue
            word, phase, *rest = line.split()
            assert word != "FINISHED", f"writer for phase {phase} did not pause"
            if word == "CHILD":
                pids[phase] = int(rest[0])
            else:
                paused.add(phase)
        for phase in PHASES:
            os.kill(pids[phase], signal.SIGKILL)
        launcher.wait(timeout=60)
    finally:
        if launcher.poll() is None:
            for pid in pids.values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            launcher.kill()
        launcher.stdout.close()
        launcher.stderr.close()
    for phase, folder in folders.items():
        if phase == "after_backup":
            assert not folder.exists() and backup_path(folder.absolute()).exists()  # the crash window
        else:
            assert folder.exists()
        index = open_index(folder)  # recovers when needed
        expected = 27 if phase == "after_swap" else 20
        assert len(index) == expected and index.index.ntotal == expected, phase
        assert index.item(5)["source"] == "item5"
        assert index.search(np.load(folder / "vectors.npy")[:1], 1)[0][0].id == 0
        add_items(folder, gallery, make_items(2, prefix="after"))  # a later write succeeds
        assert len(open_index(folder)) == expected + 2, phase
        leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".idx.") and "lock" not in p.name]
        assert leftovers == [], (phase, leftovers)


# ---------------------------------------------------------------- CLI


def flat(text: str) -> str:
    """CLI output without rich's line wrapping."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def cli_app():
    from hetsearch.cli import _register_feature_commands, app

    if not any(getattr(c, "name", None) == "query" for c in app.registered_commands):
        _register_feature_commands()
    return app


def test_cli_build_query_add_remove(tmp_path, models, cli_app):
    runner = CliRunner()
    paths = write_image_folder(tmp_path / "imgs", n=12)
    out = tmp_path / "idx"
    result = runner.invoke(cli_app, ["index", "build", "--gallery-model", str(models.gallery), "--images",
                                     str(tmp_path / "imgs"), "--out", str(out), "--type", "hnsw", "--hnsw-m", "8",
                                     "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "built" in result.output and "12 items" in flat(result.output)
    result = runner.invoke(cli_app, ["query", "--index", str(out), "--query-model", str(models.query), "--k", "3",
                                     "--json", str(paths[0]), str(paths[1])])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [len(q["results"]) for q in payload["queries"]] == [3, 3]
    assert set(payload["queries"][0]["results"][0]) == {"id", "score", "label", "source", "fields"}
    result = runner.invoke(cli_app, ["query", "--index", str(out), "--query-model", str(models.gallery), str(paths[2])])
    assert result.exit_code == 0 and "rank" in result.output and "circle" in result.output
    # an incompatible query model is refused with both ids named
    result = runner.invoke(cli_app, ["query", "--index", str(out), "--query-model", str(models.stranger), str(paths[0])])
    assert result.exit_code != 0 and isinstance(result.exception, CompatibilityError)
    result = runner.invoke(cli_app, ["index", "add", "--index", str(out), "--images", str(tmp_path / "imgs"),
                                     "--limit", "2", "--no-progress"])
    assert result.exit_code != 0 and "already in the index" in str(result.exception)  # same files twice
    result = runner.invoke(cli_app, ["index", "add", "--index", str(out), "--images", str(tmp_path / "imgs"),
                                     "--limit", "2", "--no-progress", "--allow-duplicates"])
    assert result.exit_code == 0 and "now" in result.output, result.output
    result = runner.invoke(cli_app, ["index", "remove", "--index", str(out), "0", "13"])
    assert result.exit_code == 0 and "removed 2 items" in flat(result.output), result.output
    result = runner.invoke(cli_app, ["index", "info", str(out), "--json"])
    assert json.loads(result.output)["item_count"] == 12
    result = runner.invoke(cli_app, ["index", "info", "--index", str(out), "--json"])  # like every other command
    assert json.loads(result.output)["item_count"] == 12
    result = runner.invoke(cli_app, ["index", "build", "--gallery-model", str(models.gallery), "--images",
                                     str(tmp_path / "imgs"), "--out", str(out), "--type", "flat", "--nlist", "4"])
    assert result.exit_code != 0 and "do not apply" in str(result.exception)
