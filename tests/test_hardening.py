"""Damaged index folders, bad inputs to the CLI, the measured model contract (`hetsearch verify`) and
the live reload of a served index under load: every failure is one clear line (or a 4xx), never a
traceback or a 5xx."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from hetsearch.errors import CompatibilityError, HetsearchError
from hetsearch.index import IndexOpenError, add_items, build_index, folder_items, open_index, rebuild_index, remove_items
from hetsearch.index.check import check_folder
from hetsearch.index.manifest import read_manifest
from index_fixtures import DAMAGES, make_tiny_models, write_image_folder
from hetsearch.models import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    models = make_tiny_models(root / "models")
    paths = write_image_folder(root / "imgs", n=40)
    build_index(root / "idx", load_checkpoint(models.gallery), folder_items(root / "imgs", 1, 16))
    return {"root": root, "models": models, "paths": paths, "index": root / "idx"}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`hetsearch ARGV` in-process, through `main` (which prints HetsearchError without a traceback)."""
    from hetsearch.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def damaged_copy(built, tmp_path, name: str):
    folder = tmp_path / "idx"
    shutil.copytree(built["index"], folder)
    DAMAGES[name][0](folder)
    return folder


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_damaged_index_gives_one_line_naming_the_file_and_the_fix(built, tmp_path, name, capsys):
    folder = damaged_copy(built, tmp_path, name)
    _, file, at_open = DAMAGES[name]
    if at_open:
        with pytest.raises(IndexOpenError) as info:
            open_index(folder)
        message = str(info.value)
        assert "\n" not in message and f"{folder / file}:" in message, message
        assert any(word in message for word in ("rebuild", "restore", "hetsearch index")), message
        # the CLI prints it as one line, no traceback
        code, out, err = run_cli(["query", "--index", str(folder), "--query-model", str(built["models"].query),
                                  str(built["paths"][0])], capsys)
        assert code == 2 and "Traceback" not in err and file in err, err
        assert len([line for line in err.splitlines() if line.strip()]) <= 3, err  # one line, soft-wrapped
    # `index check` reports every damage (the content-only change too), exit code 1
    code, out, err = run_cli(["index", "check", "--index", str(folder)], capsys)
    assert code in (1, 2) and file in err and "Traceback" not in err, (code, out, err)


def test_index_check_passes_a_sound_index_and_verifies_checksums(built, capsys):
    code, out, err = run_cli(["index", "check", str(built["index"])], capsys)
    assert code == 0 and "ok" in out and "checksums match" in " ".join(out.split()), (out, err)
    manifest = read_manifest(built["index"])
    assert set(manifest["files"]) == {"index.faiss", "metadata.sqlite", "ids.npy", "vectors.npy", "thumbnails.npy"}
    assert check_folder(built["index"], manifest, deep=True) == []


def test_rebuild_repairs_a_damaged_faiss_file_and_refuses_damaged_vectors(built, tmp_path):
    folder = damaged_copy(built, tmp_path, "index.faiss truncated")
    rebuild_index(folder, "flat")
    assert len(open_index(folder)) == 40
    (tmp_path / "idx2").mkdir()
    folder = damaged_copy(built, tmp_path / "idx2", "vectors.npy truncated")
    with pytest.raises(IndexOpenError, match=r"vectors\.npy: is truncated .*hetsearch index build"):
        rebuild_index(folder, "hnsw")
    with pytest.raises(IndexOpenError, match=r"vectors\.npy"):
        add_items(folder, load_checkpoint(built["models"].gallery), folder_items(built["root"] / "imgs", 1, 16))


def test_remove_accepts_relative_sources(built, tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    shutil.copytree(built["index"], folder)
    monkeypatch.chdir(built["root"])
    relative = str(built["paths"][0].relative_to(built["root"]))  # imgs/circle/000.png
    manifest, removed = remove_items(folder, sources=[relative, "./" + relative.replace("000", "004")])
    assert len(removed) == 2 and manifest["item_count"] == 38


@pytest.mark.parametrize("overrides, field", [
    (["train.lr=-1"], "train.lr"), (["train.batch_size=0"], "train.batch_size"),
    (["model.embedding_dim=-5"], "model.embedding_dim"), (["train.epochs=-1"], "train.epochs")])
def test_bad_config_values_are_one_line(tmp_path, overrides, field, capsys):
    code, out, err = run_cli(["train", "configs/fashion_mnist/gallery.yaml", *overrides,
                              f"output_dir={tmp_path}"], capsys)
    assert code == 2 and field in err and "Traceback" not in err, err


def test_malicious_checkpoint_on_resume_and_png_as_model_are_one_line(built, tmp_path, capsys, tiny_train_overrides):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint_last.pt").write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    code, out, err = run_cli(["train", "configs/fashion_mnist/gallery.yaml", *tiny_train_overrides, "name=run",
                              "--resume"], capsys)
    assert code == 2 and "checkpoint_last.pt" in err and "Traceback" not in err and "pwned" not in out + err, err
    assert len([line for line in err.splitlines() if line.strip()]) <= 3, err
    code, out, err = run_cli(["index", "build", "--gallery-model", str(built["paths"][0]), "--images",
                              str(built["root"] / "imgs"), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "000.png" in err and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.strip()]) <= 3, err


# ---------------------------------------------------------------- measured contract


def test_verify_refuses_a_random_model_that_claims_compatibility(built, capsys):
    models, index = built["models"], str(built["index"])
    # the tiny "query" model declares compatible_with=<gallery> but has random weights
    code, out, err = run_cli(["verify", "--index", index, "--query-model", str(models.query)], capsys)
    assert code == 2 and "near chance" in err and "Traceback" not in err, err
    code, out, err = run_cli(["verify", "--index", index, "--query-model", str(models.query), "--warn-only"], capsys)
    assert code == 0 and "warning" in err and "near chance" in err
    # the gallery model itself passes: M(g, g) on the stored sample equals the recorded one
    code, out, err = run_cli(["verify", "--index", index, "--query-model", str(models.gallery), "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["verdict"] == "ok" and result["query_score"] == pytest.approx(result["gallery_score"])
    assert result["query_score"] > result["chance"]
    # optional at query start
    code, out, err = run_cli(["query", "--index", index, "--query-model", str(models.query), "--verify", "refuse",
                              str(built["paths"][0])], capsys)
    assert code == 2 and "near chance" in err


def test_serve_verify_refuses_at_start(built):
    from hetsearch.serve.server import load_service

    with pytest.raises(CompatibilityError, match="near chance"):
        load_service(built["index"], built["models"].query, verify="refuse")
    gallery, _ = load_service(built["index"], built["models"].query, verify="warn")
    assert any("near chance" in w for w in gallery.warnings)


# ---------------------------------------------------------------- live reload under load


def test_server_swaps_in_new_index_versions_under_load(built, tmp_path):
    """Clients search and fetch items without pause while the index gets items added and removed and
    is rebuilt: every request answers 200 (none dropped), and the server serves each new version."""
    from hetsearch.export.encoders import TorchEncoder
    from hetsearch.serve.app import create_app
    from hetsearch.serve.reload import LiveIndex
    from hetsearch.serve.server import warm_up

    folder = tmp_path / "idx"
    shutil.copytree(built["index"], folder)
    query = load_checkpoint(built["models"].query)
    encoder = TorchEncoder(query.model, query.meta)
    live = LiveIndex(open_index(folder, query_meta=query.meta), interval=0.05,
                     warmup=lambda g, enc: warm_up(g, enc, 1), log=lambda message: None)
    app = create_app(live, encoder)
    result = run_under_load(app, lambda base: exercise_writes(folder, built, tmp_path, base))
    assert result["dropped"] == 0, result
    assert result["requests"] >= 20 and live.reloads == 3, (result, live.reloads)
    assert result["revisions"] == [2, 3, 4], result


def test_server_swaps_in_a_refreshed_query_model_under_load(built, tmp_path):
    """A refreshed query model installed over the served file (atomic rename, as `hetsearch refresh
    --install` does) is loaded, checked against the index and swapped in while clients search: no
    request dropped, /health and the answers name the new model; a model the index's contract refuses
    is not swapped in (the server keeps the one it has and says why)."""
    from hetsearch.export.encoders import TorchEncoder
    from hetsearch.serve.app import create_app
    from hetsearch.serve.reload import LiveIndex
    from hetsearch.serve.server import warm_up

    served = tmp_path / "query.pt"
    shutil.copy(built["models"].query, served)
    query = load_checkpoint(served)
    load = lambda path: TorchEncoder(load_checkpoint(path).model, load_checkpoint(path).meta)  # noqa: E731
    live = LiveIndex(open_index(built["index"], query_meta=query.meta), interval=0.05,
                     warmup=lambda g, enc: warm_up(g, enc, 1), log=lambda message: None,
                     encoder=load(served), model_path=served, load_encoder=load)
    app = create_app(live, live.encoder)
    refreshed = query.model
    with torch.no_grad():
        for param in refreshed.parameters():
            param.add_(0.01)
    fresh_meta = save_checkpoint(tmp_path / "fresh.pt", refreshed, classes=query.meta.classes,
                                 compatible_with=query.meta.compatible_with, compatibility="contrastive+relational")

    def install_models(base: str) -> list[str]:
        import httpx
        seen = []
        os.replace(shutil.copy(tmp_path / "fresh.pt", tmp_path / "fresh.tmp"), served)
        deadline = time.time() + 60
        while httpx.get(f"{base}/health", timeout=30).json()["query_model"]["model_id"] != fresh_meta.model_id:
            assert time.time() < deadline, "the refreshed model was not swapped in"
            time.sleep(0.05)
        seen.append(fresh_meta.model_id)
        os.replace(shutil.copy(built["models"].stranger, tmp_path / "stranger.tmp"), served)
        while not httpx.get(f"{base}/health", timeout=30).json()["warnings"]:
            assert time.time() < deadline, "the refused model left no warning"
            time.sleep(0.05)
        health = httpx.get(f"{base}/health", timeout=30).json()
        assert health["query_model"]["model_id"] == fresh_meta.model_id
        assert "could not be swapped in" in health["warnings"][-1]
        return seen

    result = run_under_load(app, install_models)
    assert result["dropped"] == 0, result
    assert live.model_reloads == 1 and live.encoder.meta.model_id == fresh_meta.model_id


def exercise_writes(folder, built, tmp_path, base: str) -> list[int]:
    """add -> remove -> rebuild, each time waiting until /health serves the new revision."""
    import httpx

    gallery = load_checkpoint(built["models"].gallery)
    write_image_folder(tmp_path / "more", n=8, seed=3)
    seen = []

    def wait_for(revision: int, items: int) -> None:
        deadline = time.time() + 60
        while True:
            index = httpx.get(f"{base}/health", timeout=30).json()["index"]
            if index["revision"] == revision:
                assert index["items"] == items
                seen.append(revision)
                return
            assert time.time() < deadline, f"revision {revision} not served: {index}"
            time.sleep(0.05)

    add_items(folder, gallery, folder_items(tmp_path / "more", 1, 16))
    wait_for(2, 48)
    remove_items(folder, ids=[0, 1, 40])
    wait_for(3, 45)
    assert httpx.get(f"{base}/items/0", timeout=30).status_code == 404
    assert httpx.get(f"{base}/items/41", timeout=30).status_code == 200
    rebuild_index(folder, "hnsw", {"M": 8})
    wait_for(4, 45)
    return seen


def run_under_load(app, writer, clients: int = 3) -> dict:
    """Serve ``app`` with uvicorn; ``clients`` threads search and fetch items until ``writer(base_url)``
    returns. A request is dropped when it fails to connect, times out or gets an unexpected status
    (an item fetched after its removal may be 404)."""
    import socket

    import httpx
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    base, stop = f"http://127.0.0.1:{port}", threading.Event()
    counts = {"requests": 0, "dropped": 0, "errors": []}
    lock = threading.Lock()
    image = (write_image_folder.__globals__["synthetic_images"](1, 16, 1, 7)[0][0, :, :, 0])
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    png = buffer.getvalue()

    def client_loop():
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                problems = []
                try:
                    response = client.post("/search", files={"file": ("q.png", png, "image/png")}, data={"k": "5"})
                    if response.status_code != 200:
                        problems.append(f"search {response.status_code}")
                    else:
                        for hit in response.json()["results"][:2]:
                            item = client.get(f"/items/{hit['id']}")
                            if item.status_code not in (200, 404):
                                problems.append(f"item {item.status_code}")
                            with lock:
                                counts["requests"] += 1
                except httpx.HTTPError as exc:
                    problems.append(f"{type(exc).__name__}: {exc}")
                with lock:
                    counts["requests"] += 1
                    counts["dropped"] += len(problems)
                    counts["errors"] += problems

    workers = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(0.3)
        counts["revisions"] = writer(base)
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        server.should_exit = True
        thread.join(timeout=10)
    return counts


def test_damaged_model_metadata_is_one_clean_error(tmp_path):
    import onnx
    import torch
    from onnx import TensorProto, helper

    from hetsearch.errors import CheckpointError
    from hetsearch.export.encoders import META_KEY, ExportError
    from hetsearch.export.runtime import load_query_encoder
    from hetsearch.models.checkpoint import FORMAT

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])])
    for value, match in (("{not json", "not valid JSON"), (json.dumps({"model_id": "x"}), "not a hetsearch model")):
        model = helper.make_model(graph)
        helper.set_model_props(model, {META_KEY: value})
        onnx.save(model, tmp_path / "bad.onnx")
        with pytest.raises(ExportError, match=f"bad.onnx: .*{match}"):
            load_query_encoder(tmp_path / "bad.onnx")
    torch.save({"format": FORMAT, "state_dict": {}, "meta": {"model_id": "x", "spec": {"nope": 1}}},
               tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad.pt: model metadata is not a hetsearch model record") as info:
        load_query_encoder(tmp_path / "bad.pt")
    assert "\n" not in str(info.value)
