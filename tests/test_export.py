"""Export of query models to ONNX / TorchScript: contract metadata, parity check, runtimes, CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from hetsearch.errors import HetsearchError
from hetsearch.export import ExportError, OnnxEncoder, export_model, load_query_encoder, parity_check
from hetsearch.export.encoders import TorchEncoder
from hetsearch.export.exporter import IndexSample, parity_sample
from hetsearch.index import build_index
from hetsearch.index.gallery import read_stored
from index_fixtures import make_tiny_models, synthetic_images
from hetsearch.models import load_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("models"))  # bench/service.py exports the real light nets


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.ascontiguousarray(synthetic_images(n, 16, 1, seed)[0].transpose(0, 3, 1, 2))


def test_onnx_export_carries_the_contract_and_matches_eager(models, tmp_path):
    report = export_model(models.query, "onnx", tmp_path / "q.onnx")  # default exporter: dynamo
    assert report["parity"]["passed"] and report["parity"]["max_abs_diff"] <= 1e-4
    assert report["parity"]["top10_identical"] and report["parity"]["batch1_queries"] == 16
    proto = onnx.load(str(tmp_path / "q.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = models.query_meta
    assert props["model_id"] == meta.model_id and props["compatible_with"] == models.gallery_meta.model_id
    assert (props["embedding_dim"], props["image_size"], props["in_chans"]) == ("16", "16", "1")
    # the model's preprocessing travels with the exported file, as timm's pretrained config does
    prep = json.loads(props["preprocessing"])
    assert prep == meta.spec.preprocessing.to_dict() and prep["mean"] is not None
    assert (prep["image_size"], prep["channels"], prep["resize"], prep["background"]) == (16, 1, "center_crop", "white")
    sidecar = json.loads((tmp_path / "q.onnx.json").read_text())
    assert sidecar["model_id"] == meta.model_id and sidecar["parity"]["passed"]
    assert sidecar["preprocessing"] == prep
    # the exported net: dynamic batch, same embeddings, same contract
    encoder = load_query_encoder(tmp_path / "q.onnx")
    assert isinstance(encoder, OnnxEncoder) and encoder.meta.model_id == meta.model_id
    assert encoder.meta.compatible_with == models.gallery_meta.model_id
    eager = TorchEncoder(load_checkpoint(models.query).model, meta)
    x = images(7)
    for batch in (x[:1], x):
        assert np.abs(encoder.embed(batch) - eager.embed(batch)).max() <= 1e-4


def test_torchscript_export(models, tmp_path):
    report = export_model(models.query, "torchscript", tmp_path / "q.torchscript.pt")
    assert report["parity"]["passed"] and report["exporter"] == "torch.jit.trace"
    encoder = load_query_encoder(tmp_path / "q.torchscript.pt")
    assert encoder.runtime == "torchscript" and encoder.meta.model_id == models.query_meta.model_id
    eager = TorchEncoder(load_checkpoint(models.query).model, models.query_meta)
    assert np.abs(encoder.embed(images(3)) - eager.embed(images(3))).max() <= 1e-5


def test_parity_failure_writes_nothing(models, tmp_path):
    with pytest.raises(ExportError, match="parity"):
        export_model(models.query, "onnx", tmp_path / "q.onnx", exporter="legacy", atol=1e-12, n_gallery=32)
    assert list(tmp_path.iterdir()) == []


def test_parity_check_detects_a_different_network(models):
    loaded = load_checkpoint(models.query)
    eager = TorchEncoder(loaded.model, loaded.meta)

    class Perturbed(TorchEncoder):
        def embed(self, batch):
            out = super().embed(batch)
            return out + np.random.default_rng(0).normal(0, 0.05, out.shape).astype(np.float32)

    queries, gallery, _, _ = parity_sample(loaded, n_queries=16, n_gallery=64, data="synthetic")
    assert parity_check(eager, eager, queries, gallery)["passed"]
    report = parity_check(eager, Perturbed(loaded.model, loaded.meta), queries, gallery)
    assert not report["passed"] and report["max_abs_diff"] > 1e-4


def test_parity_sample_from_an_index(models, tmp_path):
    gallery = load_checkpoint(models.gallery)
    from hetsearch.index import GalleryItems

    x = torch.from_numpy(images(40))
    build_index(tmp_path / "idx", gallery, GalleryItems(images=x, sources=[str(i) for i in range(40)],
                                                        labels=[None] * 40))
    stored = read_stored(tmp_path / "idx")  # export reads no index itself: the caller passes the sample
    sample = IndexSample(stored.thumbnails, stored.vectors, str(tmp_path / "idx"))
    queries, gallery_images, gallery_emb, description = parity_sample(load_checkpoint(models.query),
                                                                      index=sample, n_gallery=30)
    assert gallery_images is None and gallery_emb.shape == (30, 16) and queries.shape[1:] == (1, 16, 16)
    assert "index" in description


def test_runtime_selection_and_errors(models, tmp_path, monkeypatch):
    import functools

    import hetsearch.export.exporter as exporter

    # a checkpoint is exported on the fly (the fast legacy exporter keeps this test short)
    monkeypatch.setattr(exporter, "export_model", functools.partial(exporter.export_model, exporter="legacy"))
    encoder = load_query_encoder(models.query, runtime="onnx")
    assert encoder.runtime == "onnx" and encoder.meta.model_id == models.query_meta.model_id
    assert load_query_encoder(models.query).runtime == "torch"
    bare = tmp_path / "bare.onnx"
    model = load_checkpoint(models.query).model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 1, 16, 16),), str(bare), dynamo=False)
    with pytest.raises(ExportError, match="contract metadata"):
        load_query_encoder(bare)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ExportError, match="not a loadable ONNX"):
        load_query_encoder(tmp_path / "junk.onnx")
    with pytest.raises(HetsearchError, match="--runtime"):
        load_query_encoder(models.query, runtime="tensorrt")


def test_export_cli(models, tmp_path):
    from hetsearch.cli import _register_feature_commands, app

    if not any(getattr(c, "name", None) == "export" for c in app.registered_commands):
        _register_feature_commands()
    from hetsearch.index import GalleryItems

    build_index(tmp_path / "idx", load_checkpoint(models.gallery),
                GalleryItems(images=torch.from_numpy(images(40)), sources=[str(i) for i in range(40)],
                             labels=[None] * 40))
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(app, ["export", "--query-model", str(models.query), "--format", "onnx", "--out",
                                      str(out), "--exporter", "legacy", "--gallery", "64", "--json",
                                      "--index", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["path"] == str(out) and report["parity"]["passed"] and out.is_file()
    assert report["parity"]["sample"].startswith(f"index {tmp_path / 'idx'}: ")  # the CLI read the index
