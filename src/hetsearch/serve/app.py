"""The HTTP API and web page: FastAPI app over a `GalleryIndex` and a `QueryEncoder`.

Endpoints (schema at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /search``: multipart upload ``file`` (an image) and form field ``k`` -> top-k items with
  scores, labels, sources and server-side timings.
* ``GET /items/{id}``: an item's metadata; ``GET /items/{id}/image``: its PNG, rendered from the
  thumbnails stored in the index (never read from a path, so no path traversal is possible).
* ``GET /health``: query model (id, FLOPs, runtime), gallery model id, item count.
* ``GET /``: the web page (``serve/static``); ``GET /docs``: Swagger UI, served from the
  ``fastapi-offline`` package (no CDN: the page works offline).

Uploads are bounded (``max_upload_bytes``, checked before the body is parsed) and must decode as
8-bit images within the pixel limits of `hetsearch.data.decode` (sides, aspect ratio, pixels;
concurrent decodes share one `PixelBudget`); anything else is answered with a 4xx and a
``{"detail": message}`` body. Every response carries ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and a Content-Security-Policy that
allows only this server's own scripts and styles. Item sources never show server folders
(`GalleryIndex.public_source`). The index may be a `LiveIndex`, which follows new versions of its
folder (see `hetsearch.serve.reload`).

Modules: `schemas` (request and response models), `middleware` (security headers, upload size
limit), `handler` (one search request), `routes` (the endpoints); this module builds the app.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import hetsearch
from hetsearch.data.decode import DEFAULT_MAX_PIXELS, PixelBudget
from hetsearch.export.encoders import QueryEncoder
from hetsearch.index.gallery import GalleryIndex
from hetsearch.serve.handler import SearchHandler
from hetsearch.serve.middleware import BodySizeLimit, SecurityHeaders
from hetsearch.serve.reload import LiveIndex
from hetsearch.serve.routes import (STATIC_DIR, add_health_route, add_item_routes, add_page_routes,
                                    add_search_route)

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024


def swagger_ui_folder() -> Path | None:
    """Swagger UI's files as shipped in the fastapi-offline package (used for its assets only)."""
    if importlib.util.find_spec("fastapi_offline") is None:  # pragma: no cover - a pinned dependency
        return None
    folder = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _lifespan(live: LiveIndex):
    """The app's lifespan: the index watcher runs while the app runs."""
    @asynccontextmanager
    async def lifespan(_app):
        live.start()
        try:
            yield
        finally:
            live.stop()

    return lifespan


def _new_app(live: LiveIndex, encoder: QueryEncoder, max_upload_bytes: int) -> tuple[FastAPI, Path | None]:
    """The FastAPI app with its middleware (body limit, security headers) and static files;
    returns it with the Swagger UI folder (None without fastapi-offline)."""
    app = FastAPI(title="hetsearch", version=hetsearch.__version__, docs_url=None, redoc_url=None,
                  lifespan=_lifespan(live),
                  description="Heterogeneous visual search: a tiny query model searches a gallery indexed by a "
                              f"large gallery model. Gallery model {live.current.gallery_model_id}, query model "
                              f"{encoder.meta.model_id}.")
    app.add_middleware(BodySizeLimit, max_bytes=max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    swagger = swagger_ui_folder()
    if swagger is not None:
        app.mount("/docs-assets", StaticFiles(directory=swagger), name="docs-assets")
    return app, swagger


def create_app(gallery: GalleryIndex | LiveIndex, encoder: QueryEncoder, *,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_k: int = 100,
               max_pixels: int = DEFAULT_MAX_PIXELS, warnings: list[str] | None = None, offload: bool = True,
               threads: int | None = 1, decode_budget_pixels: int | None = None) -> FastAPI:
    """The app; ``gallery`` must already have passed the model contract check for ``encoder``.

    ``gallery``: a `GalleryIndex` (served as loaded) or a `LiveIndex` (follows new versions of the
    folder; its watcher runs while the app runs). ``decode_budget_pixels``: pixels decoded at once
    across all requests (default ``max_pixels``: one largest image, or many small ones)."""
    live = gallery if isinstance(gallery, LiveIndex) else LiveIndex(gallery, interval=None)
    live.serve_with(encoder)
    start_warnings = list(warnings or []) + list(live.current.warnings)
    app, swagger = _new_app(live, encoder, max_upload_bytes)
    app.state.live_index = live
    budget = PixelBudget(decode_budget_pixels or max_pixels)
    app.state.pixel_budget = budget
    add_page_routes(app, swagger)
    add_health_route(app, live, encoder, start_warnings, max_upload_bytes, max_k)
    answer = SearchHandler(live, encoder, budget, max_pixels=max_pixels, offload=offload, threads=threads)
    add_search_route(app, answer, max_upload_bytes, max_k)
    add_item_routes(app, live)
    return app
