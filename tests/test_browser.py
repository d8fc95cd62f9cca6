"""End to end in headless Chromium: the web page at / searches and shows the top-k grid.

Needs Debian's `chromium` (scripts/setup.sh installs it) and the `playwright` Python package (its
bundled driver only; `playwright install` is never used: the system browser is launched). Skipped
with the reason when either is missing. The screenshot goes to $HETSEARCH_ARTIFACTS (default: the
test's tmp folder) as web_search.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from hetsearch.export.encoders import TorchEncoder
from hetsearch.index import build_index, folder_items, open_index
from index_fixtures import make_tiny_models, raw_png, write_image_folder
from hetsearch.models import load_checkpoint
from hetsearch.serve.app import create_app

pytestmark = pytest.mark.browser
WARNING = "query model q is not trained to be compatible with gallery model g; searching anyway because of " \
          "--allow-incompatible"

CHROMIUM = os.environ.get("HETSEARCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _require_browser():
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright; scripts/setup.sh does it)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium; scripts/setup.sh does it)")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    import uvicorn

    root = tmp_path_factory.mktemp("browser")
    models = make_tiny_models(root / "models")
    paths = write_image_folder(root / "imgs", n=24)
    build_index(root / "idx", load_checkpoint(models.gallery), folder_items(root / "imgs", 1, 16))
    query = load_checkpoint(models.query)
    app = create_app(open_index(root / "idx", query_meta=query.meta), TorchEncoder(query.model, query.meta),
                     warnings=[WARNING])
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
    yield {"url": f"http://127.0.0.1:{port}/", "models": models, "paths": paths, "root": root}
    server.should_exit = True
    thread.join(timeout=10)


def _wait_until(page, expression: str, timeout_s: float = 30.0) -> None:
    """Poll `expression` from Python until it is truthy.

    Not page.wait_for_function: after its first check it re-evaluates the expression with eval()
    from a page task, which the page's Content-Security-Policy (script-src 'self', no
    'unsafe-eval') rightly blocks, so it failed whenever the condition was not already true.
    page.evaluate runs through the DevTools protocol, which CSP does not govern.
    """
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {expression}"
        time.sleep(0.05)


def test_web_page_search_end_to_end(live_server, tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("HETSEARCH_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("certainly not a PNG")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            console_errors = []
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            page.goto(live_server["url"])
            models = live_server["models"]
            _wait_until(page, "document.getElementById('query-model').textContent.includes('-d16-')")
            assert page.text_content("#query-model") == models.query_meta.model_id
            assert "MFLOPs" in page.text_content("#query-flops")
            assert page.text_content("#gallery-model") == models.gallery_meta.model_id

            # pick a file: the query is shown and the grid fills with k results
            page.fill("#k-input", "6")
            page.set_input_files("#file-input", str(live_server["paths"][0]))
            page.wait_for_selector("#results li.card >> nth=5")
            assert page.locator("#results li.card").count() == 6
            assert page.is_visible("#query-image")
            first = page.locator("#results li.card").first
            assert "score" in first.text_content() and first.locator(".label").text_content()
            _wait_until(page, "[...document.querySelectorAll('#results img')].every(i => i.complete && "
                                   "i.naturalWidth > 0)")
            page.screenshot(path=str(artifacts / "web_search.png"), full_page=True)

            # drop a file on the drop zone: searches again
            page.evaluate("""async (bytes) => {
                const file = new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'});
                const data = new DataTransfer(); data.items.add(file);
                document.getElementById('results').replaceChildren();
                document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: data}));
            }""", list(live_server["paths"][1].read_bytes()))
            page.wait_for_selector("#results li.card >> nth=5")
            assert "dropped.png" in page.text_content("#query-caption")

            assert "round trip" in page.text_content("#timings")

            # the --allow-incompatible warning stays on screen after searches
            assert page.is_visible("#warnings") and "--allow-incompatible" in page.text_content("#warnings")

            # a file that is not an image: a clear message, no results, no timings, no broken-image icon
            page.set_input_files("#file-input", str(not_an_image))
            page.wait_for_selector("#status.error")
            assert "415" in page.text_content("#status") and "not an image" in page.text_content("#status")
            assert page.locator("#results li.card").count() == 0
            assert page.text_content("#timings") == ""
            _wait_until(page, "document.getElementById('query-image').hidden")
            assert "cannot show this file as an image" in page.text_content("#query-caption")
            assert "--allow-incompatible" in page.text_content("#warnings")

            # 413 (pixel bomb) and 400 (truncated file): one readable line each, results and timings cleared
            bomb, truncated = tmp_path / "bomb.png", tmp_path / "truncated.png"
            bomb.write_bytes(raw_png(1, 1_000_000))
            truncated.write_bytes(live_server["paths"][3].read_bytes()[:60])
            for path, status, words in ((bomb, "413 (too large)", "each side may be at most"),
                                        (truncated, "400 (the image could not be read)", "truncated")):
                page.set_input_files("#file-input", str(live_server["paths"][1]))
                page.wait_for_selector("#results li.card >> nth=5")
                page.set_input_files("#file-input", str(path))
                page.wait_for_selector("#status.error")
                text = page.text_content("#status")
                assert text.startswith(status) and words in text, text
                assert page.locator("#results li.card").count() == 0 and page.text_content("#timings") == ""

            # a 422 (k out of range) reads as a sentence, not FastAPI's JSON
            page.fill("#k-input", "0")
            page.set_input_files("#file-input", str(live_server["paths"][2]))
            page.wait_for_selector("#status.error")
            status = page.text_content("#status")
            assert status.startswith("422 (invalid request): k:") and "greater than or equal to 1" in status, status
            assert "[{" not in status and "type" not in status
            assert page.text_content("#timings") == "" and page.locator("#results li.card").count() == 0
            page.fill("#k-input", "3")
            page.dispatch_event("#k-input", "change")
            page.wait_for_selector("#results li.card >> nth=2")
            assert not page.locator("#status.error").count()
        finally:
            browser.close()
    assert (artifacts / "web_search.png").stat().st_size > 5000
    # only the expected 4xx answers, no Content-Security-Policy violation or script error
    assert not [e for e in console_errors if "Failed to load resource" not in e], console_errors
    assert all(any(code in e for code in ("400", "413", "415", "422")) for e in console_errors), console_errors


def test_api_docs_render_offline_under_the_csp(live_server):
    """/docs: Swagger UI from the fastapi-offline package; Chromium loads nothing from outside the
    server and logs no error (a CSP violation would be one)."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            console_errors, outside = [], []
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: console_errors.append(str(exc)))
            page.on("request", lambda request: outside.append(request.url)
                    if not request.url.startswith(live_server["url"]) and not request.url.startswith("data:")
                    else None)
            page.goto(live_server["url"] + "docs")
            page.wait_for_selector(".opblock >> nth=3", timeout=20000)
            paths = page.locator(".opblock-summary-path").all_text_contents()
            assert {"/search", "/items/{item_id}", "/health"} <= {p.replace("\u200b", "") for p in paths}, paths
            assert "hetsearch" in page.text_content(".title")
        finally:
            browser.close()
    assert outside == [] and console_errors == [], (outside, console_errors)
