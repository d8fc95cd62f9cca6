"""Schema-driven fuzzing of the HTTP API with Schemathesis (`hetsearch.serve.fuzz`): every
operation of /openapi.json gets generated requests, valid and invalid per the schema (odd ids, k out
of range, random bodies), and none may be answered with a 5xx. Bounded (``HETSEARCH_FUZZ_EXAMPLES``
requests per operation and mode, default 30, in-process through the ASGI app) so it runs in well
under 2 minutes in CI."""

from __future__ import annotations

import os

import pytest

from hetsearch.export.encoders import TorchEncoder
from hetsearch.index import build_index, folder_items, open_index
from index_fixtures import make_tiny_models, write_image_folder
from hetsearch.models import load_checkpoint
from hetsearch.serve.app import create_app

EXAMPLES = int(os.environ.get("HETSEARCH_FUZZ_EXAMPLES", "30"))


def test_api_never_answers_5xx(tmp_path):
    pytest.importorskip("schemathesis")
    from hetsearch.serve.fuzz import fuzz_app

    models = make_tiny_models(tmp_path / "models")
    write_image_folder(tmp_path / "imgs", n=12)
    build_index(tmp_path / "idx", load_checkpoint(models.gallery), folder_items(tmp_path / "imgs", 1, 16))
    query = load_checkpoint(models.query)
    app = create_app(open_index(tmp_path / "idx", query_meta=query.meta), TorchEncoder(query.model, query.meta),
                     max_upload_bytes=2**20, max_k=20, offload=False)
    report = fuzz_app(app, examples=EXAMPLES)
    assert report.server_errors == 0, report.failures
    operations = {key.split(" [")[0] for key in report.by_operation}
    assert {"POST /search", "GET /items/{item_id}", "GET /items/{item_id}/image", "GET /health"} <= operations
    assert report.sent >= 4 * EXAMPLES  # every operation was exercised
    assert any(400 <= int(status) < 500 for status in report.by_status)  # invalid requests were sent
