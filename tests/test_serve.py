"""HTTP API: search, items, images, health, OpenAPI schema, malformed uploads, ONNX runtime, the
refusal of an incompatible query model, and a live `hetsearch serve` process that keeps serving
after bad requests."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from hetsearch.export.encoders import TorchEncoder
from hetsearch.export.runtime import load_query_encoder
from hetsearch.index import build_index, folder_items, open_index
from index_fixtures import make_tiny_models, raw_png, write_image_folder
from hetsearch.models import load_checkpoint
from hetsearch.serve.app import create_app


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    models = make_tiny_models(root / "models")
    paths = write_image_folder(root / "imgs", n=40)
    gallery = load_checkpoint(models.gallery)
    build_index(root / "idx", gallery, folder_items(root / "imgs", 1, 16))
    query = load_checkpoint(models.query)
    index = open_index(root / "idx", query_meta=query.meta)
    app = create_app(index, TorchEncoder(query.model, query.meta), max_upload_bytes=2 * 2**20, max_k=20)
    return {"root": root, "models": models, "paths": paths, "index": index, "app": app, "client": TestClient(app)}


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def search(client, data: bytes, k=5, name="q.png"):
    return client.post("/search", files={"file": (name, data, "image/png")}, data={"k": str(k)})


def test_search_returns_top_k_with_metadata_and_timings(service):
    client = service["client"]
    response = search(client, service["paths"][3].read_bytes(), k=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["k"] == 5 and len(body["results"]) == 5
    assert body["query_model"] == service["models"].query_meta.model_id
    assert body["gallery_model"] == service["models"].gallery_meta.model_id
    first = body["results"][0]
    assert set(first) == {"rank", "id", "score", "label", "source", "fields", "image_url"}
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert set(body["timings"]) == {"read_ms", "decode_ms", "embed_ms", "search_ms", "total_ms"}
    # same answer as the library: decoding matches the data layer's preprocessing
    index, query = service["index"], load_checkpoint(service["models"].query)
    items = folder_items(service["root"] / "imgs", 1, 16)
    i = items.sources.index(str(service["paths"][3]))
    expected = index.search(TorchEncoder(query.model, query.meta).embed(items.images[i:i + 1].numpy()), 5)[0]
    assert [r["id"] for r in body["results"]] == [h.id for h in expected]
    # any 8-bit mode and size is converted like training images (RGB, RGBA, palette, JPEG, big)
    rgb = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    for data in (png_bytes(rgb), png_bytes(np.dstack([rgb, rgb[:, :, :1]])), png_bytes(rgb, "JPEG"),
                 png_bytes(rgb, "GIF"), png_bytes(rgb, "BMP")):
        assert search(client, data, k=3).status_code == 200


def test_items_and_images_come_from_the_index(service):
    client, index = service["client"], service["index"]
    item = client.get("/items/4").json()
    stored = index.item(4)["source"]
    assert stored.startswith("/") and stored.endswith(item["source"])
    assert item == {"id": 4, "label": index.item(4)["label"], "source": item["source"], "fields": {},
                    "image_url": "/items/4/image"}
    assert not item["source"].startswith("/") and item["source"].count("/") == 1  # label/file.png, no server path
    response = client.get("/items/4/image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    assert np.array_equal(image, index.thumbnail(4)[0])
    assert client.get("/items/12345").status_code == 404
    assert client.get("/items/12345/image").status_code == 404
    assert "no item with id 12345" in client.get("/items/12345/image").json()["detail"]
    for attack in ("/items/..%2F..%2Fetc%2Fpasswd/image", "/items/../../etc/passwd", "/items/-1/image",
                   "/items/4%2F..%2F..%2Fmanifest.json/image", "/items/1e3/image"):
        response = client.get(attack)
        assert response.status_code in (404, 422), attack
        assert b"root:" not in response.content and b"gallery_model" not in response.content


@pytest.mark.parametrize("item_id, status", [
    ("9223372036854775807", 404), ("9223372036854775808", 404), ("99999999999999999999", 422),
    ("-99999999999999999999", 422), ("1.0", 422), ("+5", 422), ("05", 422), ("4 ", 422), ("1e3", 422),
    ("0x10", 422), ("\u0664", 422), ("4", 200)])
def test_item_ids_are_strict_integers_in_range(service, item_id, status):
    """Huge or odd ids never reach SQLite (no OverflowError -> 500); only plain decimal ids are ids."""
    client = service["client"]
    for suffix in ("", "/image"):
        response = client.get(f"/items/{item_id}{suffix}")
        assert response.status_code == status, (item_id, suffix, response.text)
        if status != 200:
            detail = response.json()["detail"]
            assert detail and (isinstance(detail, str) or isinstance(detail, list))


def test_security_headers_and_no_server_paths(service):
    client, root = service["client"], str(service["root"])
    for path in ("/", "/health", "/items/1", "/items/1/image", "/static/app.js", "/docs", "/openapi.json",
                 "/items/999999"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp, path
    response = search(client, service["paths"][3].read_bytes(), k=20)
    for hit in response.json()["results"]:
        assert not hit["source"].startswith("/") and root not in hit["source"]
    assert root not in client.get("/health").text
    # errors (413 from the body-size middleware, 422 from validation) carry them too
    big = search(client, b"\0" * (3 * 2**20))
    assert big.status_code == 413 and big.headers["x-content-type-options"] == "nosniff"


def test_docs_are_served_from_a_package_not_a_cdn(service):
    client = service["client"]
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/static/docs.js").status_code == 200


def test_health_names_models_and_items(service):
    health = service["client"].get("/health").json()
    assert health["status"] == "ok" and health["items"] == 40
    assert health["query_model"]["model_id"] == service["models"].query_meta.model_id
    assert health["query_model"]["mflops"] == pytest.approx(service["models"].query_meta.flops / 1e6, abs=1e-3)
    assert health["query_model"]["runtime"] == "torch"
    assert health["gallery_model"]["model_id"] == service["models"].gallery_meta.model_id
    assert health["index"]["index_type"] == "flat"


def test_openapi_schema_validates(service):
    validator = pytest.importorskip("openapi_spec_validator")
    schema = service["client"].get("/openapi.json").json()
    validator.validate(schema)
    assert {"/search", "/items/{item_id}", "/items/{item_id}/image", "/health"} <= set(schema["paths"])
    assert {"400", "413", "415", "422"} <= set(schema["paths"]["/search"]["post"]["responses"])


def test_web_page_and_static_files(service):
    client = service["client"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file-input"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def malformed_uploads(valid_png: bytes) -> dict[str, tuple[bytes, int]]:
    sixteen_bit = png_bytes(np.full((20, 20), 40000, dtype=np.uint16))
    float_tiff = io.BytesIO()
    Image.fromarray(np.ones((8, 8), dtype=np.float32)).save(float_tiff, "TIFF")
    return {"empty": (b"", 400), "truncated": (valid_png[: len(valid_png) // 2], 400),
            "text": (b"hello, I am not an image", 415), "html": (b"<html><body>hi</body></html>", 415),
            "16-bit mode": (sixteen_bit, 415), "float mode": (float_tiff.getvalue(), 415),
            "16-bit RGB": (raw_png(20, 20, 16, 2), 415), "16-bit RGBA": (raw_png(20, 20, 16, 6), 415),
            "1x1,000,000": (raw_png(1, 1_000_000), 413), "1x39,000,000": (raw_png(1, 39_000_000), 413),
            "aspect 100:1": (raw_png(10_000, 100), 413), "zero size": (raw_png(0, 10), 415)}


def test_malformed_uploads_get_4xx_and_the_service_keeps_serving(service):
    client = service["client"]
    valid = service["paths"][0].read_bytes()
    for name, (data, status) in malformed_uploads(valid).items():
        response = search(client, data)
        assert response.status_code == status, (name, response.text)
        assert isinstance(response.json()["detail"], str) and response.json()["detail"], name
    too_big = b"\x89PNG" + b"\0" * (3 * 2**20)  # the app's limit here is 2 MiB
    response = search(client, too_big)
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    huge = io.BytesIO()  # small file, too many pixels
    Image.new("L", (8000, 6000)).save(huge, "PNG")
    assert search(client, huge.getvalue()).status_code == 413
    assert client.post("/search", data={"k": "3"}).status_code == 422  # no file
    assert client.post("/search", json={"k": 3}).status_code == 422  # not multipart
    assert search(client, valid, k=0).status_code == 422
    assert search(client, valid, k=21).status_code == 422  # over max_k
    assert search(client, valid).status_code == 200
    assert client.get("/health").json()["status"] == "ok"


DECODE_PEAK = textwrap.dedent("""
    import resource, sys
    from hetsearch.data.decode import decode_image_bytes
    from hetsearch.data.fileset import DecodeSpec
    data = open(sys.argv[1], "rb").read()
    decode_image_bytes(data, DecodeSpec(1, 28))  # warm: imports, allocator
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name in sys.argv[2:]:
        decode_image_bytes(open(name, "rb").read(), DecodeSpec(3, 224))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
""")


def test_decoding_peak_memory_stays_within_the_pixel_budget(tmp_path):
    """The largest accepted images (a 1:64 strip, a 40-megapixel RGBA square) raise a process's peak
    memory by at most their decoded size x DECODE_COPIES: the crop happens before any resize, so
    no upscaled intermediate (the old 1x1,000,000 -> 224x224,000,000 path) can exist."""
    from hetsearch.data.decode import BYTES_PER_PIXEL, DECODE_COPIES, DEFAULT_MAX_PIXELS, MAX_ASPECT

    small = tmp_path / "small.png"
    small.write_bytes(raw_png(8, 8))
    strip, square = tmp_path / "strip.png", tmp_path / "square.png"
    strip.write_bytes(raw_png(250, 250 * MAX_ASPECT))           # 4 MP, aspect 64
    side = int(DEFAULT_MAX_PIXELS ** 0.5)
    square.write_bytes(raw_png(side, side, 8, 6))                # 40 MP RGBA
    script = tmp_path / "peak.py"
    script.write_text(DECODE_PEAK)
    out = subprocess.run([sys.executable, str(script), str(small), str(strip), str(square)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    growth = int(out.stdout.split()[-1])
    assert growth <= DEFAULT_MAX_PIXELS * BYTES_PER_PIXEL * DECODE_COPIES, growth


def test_memory_error_while_decoding_is_a_413(service, monkeypatch):
    import hetsearch.data.decode as images

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(images, "_bounded_fit", exhausted)
    response = search(service["client"], service["paths"][0].read_bytes())
    assert response.status_code == 413 and "memory" in response.json()["detail"]


def test_pixel_budget_bounds_concurrent_decodes():
    import threading

    from hetsearch.data.decode import PixelBudget

    budget, peak, lock = PixelBudget(100), [0], threading.Lock()

    def work():
        with budget.reserve(60):
            with lock:
                peak[0] = max(peak[0], budget.in_use)
            time.sleep(0.01)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 60 and budget.in_use == 0  # two 60-pixel decodes never overlap in a 100-pixel budget
    with budget.reserve(10**9):  # larger than the budget: runs alone
        assert budget.in_use == 100


def test_onnx_runtime_serves_the_same_results(service, tmp_path):
    from hetsearch.export import export_model

    report = export_model(service["models"].query, "onnx", tmp_path / "q.onnx", exporter="legacy", n_gallery=64)
    encoder = load_query_encoder(report["path"])
    assert encoder.runtime == "onnx" and encoder.meta.model_id == service["models"].query_meta.model_id
    client = TestClient(create_app(service["index"], encoder))
    data = service["paths"][5].read_bytes()
    torch_hits = search(service["client"], data, k=10).json()["results"]
    onnx_body = search(client, data, k=10).json()
    assert [r["id"] for r in onnx_body["results"]] == [r["id"] for r in torch_hits]
    assert np.allclose([r["score"] for r in onnx_body["results"]], [r["score"] for r in torch_hits], atol=1e-4)
    assert client.get("/health").json()["query_model"]["runtime"] == "onnx"


# ---------------------------------------------------------------- a live server process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hetsearch.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, COLUMNS="200"))


def test_serve_refuses_an_incompatible_query_model(service):
    from typer.testing import CliRunner

    from hetsearch.cli import _register_feature_commands, app
    from hetsearch.errors import CompatibilityError

    if not any(getattr(c, "name", None) == "serve" for c in app.registered_commands):
        _register_feature_commands()
    models = service["models"]
    result = CliRunner().invoke(app, ["serve", "--index", str(service["root"] / "idx"), "--query-model",
                                      str(models.stranger), "--port", str(free_port())])
    assert isinstance(result.exception, CompatibilityError)
    message = str(result.exception)
    assert models.stranger_meta.model_id in message and models.gallery_meta.model_id in message
    assert "--allow-incompatible" in message


def test_live_server_survives_bad_uploads(service):
    models, port = service["models"], free_port()
    server = start_server(["--index", str(service["root"] / "idx"), "--query-model", str(models.query),
                           "--port", str(port), "--max-upload-mb", "10"])
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            deadline = time.time() + 120
            while True:
                assert server.poll() is None, server.stdout.read()
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.time() < deadline, "server did not start"
                time.sleep(0.3)
            valid = service["paths"][0].read_bytes()
            uploads = malformed_uploads(valid)
            uploads["50 MB"] = (b"\x89PNG" + os.urandom(1024) * (50 * 1024), 413)
            for name, (data, status) in uploads.items():
                response = client.post("/search", files={"file": ("x.png", data, "image/png")}, data={"k": "3"})
                assert response.status_code == status, (name, response.text)
            # chunked upload without Content-Length, over the limit
            chunks = (b"\0" * 2**20 for _ in range(12))
            response = client.post("/search", content=chunks,
                                   headers={"content-type": "multipart/form-data; boundary=x"})
            assert response.status_code == 413
            response = client.post("/search", files={"file": ("x.png", valid, "image/png")}, data={"k": "3"})
            assert response.status_code == 200 and len(response.json()["results"]) == 3
            assert server.poll() is None
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        server.stdout.close()
