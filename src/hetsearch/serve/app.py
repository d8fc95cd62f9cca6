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
8-bit images within the pixel limits of `hetsearch.index.images` (sides, aspect ratio, pixels;
concurrent decodes share one `PixelBudget`); anything else is answered with a 4xx and a
``{"detail": message}`` body. Every response carries ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and a Content-Security-Policy that
allows only this server's own scripts and styles. Item sources never show server folders
(`GalleryIndex.public_source`). The index may be a `LiveIndex`, which follows new versions of its
folder (see `hetsearch.serve.reload`).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, File, Form, HTTPException, Path as PathParam, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

import hetsearch
from hetsearch.export.encoders import QueryEncoder
from hetsearch.index.gallery import GalleryIndex
from hetsearch.index.faiss_index import set_omp_threads
from hetsearch.index.images import DEFAULT_MAX_PIXELS, ImageRejected, PixelBudget, decode_image_bytes, encode_png
from hetsearch.serve.memory import trim
from hetsearch.serve.reload import LiveIndex

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DRAIN_LIMIT_BYTES = 256 * 1024 * 1024  # an oversized body up to this size is read and dropped before
# answering 413, so the client sees the answer instead of a reset connection
TRIM_ABOVE_PIXELS = 4_000_000  # after decoding more, hand free heap memory back to the system
MAX_ITEM_ID = 2**63 - 1  # item ids are SQLite / FAISS int64
ITEM_ID_PATTERN = r"^(0|[1-9][0-9]{0,18})$"  # decimal digits only: no sign, no decimal point, no exponent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"), (b"content-security-policy", CSP.encode()),
                    (b"cross-origin-opener-policy", b"same-origin")]


class Error(BaseModel):
    detail: str = Field(description="what was wrong with the request")


class SearchHit(BaseModel):
    rank: int
    id: int
    score: float = Field(description="cosine similarity (inner product of L2-normalised embeddings)")
    label: Optional[str]
    source: str = Field(description="file path or data set item the gallery image came from")
    fields: dict = Field(description="user fields given at indexing")
    image_url: str


class Timings(BaseModel):
    read_ms: float
    decode_ms: float
    embed_ms: float
    search_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    query_model: str
    gallery_model: str
    k: int
    results: list[SearchHit]
    timings: Timings


class Item(BaseModel):
    id: int
    label: Optional[str]
    source: str
    fields: dict
    image_url: str


class ModelInfo(BaseModel):
    model_id: str
    backbone: str
    embedding_dim: int
    mflops: Optional[float]
    params: Optional[int] = None
    compatible_with: Optional[str] = None
    compatibility: Optional[str] = None
    runtime: Optional[str] = None
    input: Optional[str] = None


class IndexInfo(BaseModel):
    items: int
    index_type: str
    index_params: dict
    search_params: dict
    embedding_dim: int
    created_at: Optional[str]
    updated_at: Optional[str]
    revision: Optional[int] = Field(None, description="index version: grows with every add/remove/rebuild")


class Health(BaseModel):
    status: str
    version: str
    query_model: ModelInfo
    gallery_model: ModelInfo
    items: int
    index: IndexInfo
    max_upload_bytes: int
    max_k: int
    warnings: list[str]


ERRORS = {400: {"model": Error, "description": "empty, corrupt or truncated image"},
          413: {"model": Error, "description": "upload or image dimensions too large"},
          415: {"model": Error, "description": "not an image, or an unsupported pixel mode"}}


class SecurityHeaders:
    """ASGI middleware: the security headers on every HTTP response (errors included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + \
                    [(name, value) for name, value in SECURITY_HEADERS if name not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def swagger_ui_folder() -> Path | None:
    """Swagger UI's files as shipped in the fastapi-offline package (used for its assets only)."""
    if importlib.util.find_spec("fastapi_offline") is None:  # pragma: no cover - a pinned dependency
        return None
    folder = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


class BodySizeLimit:
    """ASGI middleware: bodies larger than ``max_bytes`` get 413 before any parsing.

    A declared Content-Length over the limit is answered at once (after draining the body, up to
    DRAIN_LIMIT_BYTES); a streamed body is buffered up to the limit and replayed to the app."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    def _too_large(self, size: str) -> str:
        return (f"upload too large ({size}); the limit is {self.max_bytes} bytes "
                f"({self.max_bytes / 2**20:.1f} MiB)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self._reject(send, 400, "invalid Content-Length header")
                return
            if length > self.max_bytes:
                drained = 0
                if length <= DRAIN_LIMIT_BYTES:
                    while True:
                        message = await receive()
                        drained += len(message.get("body", b""))
                        if message["type"] == "http.disconnect" or not message.get("more_body", False):
                            break
                await self._reject(send, 413, self._too_large(f"{length} bytes"))
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send, 413, self._too_large(f"more than {self.max_bytes} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


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


def _item_record(index: GalleryIndex, item_id: int, record: dict) -> dict:
    return {"id": item_id, "label": record["label"], "source": index.public_source(record["source"]),
            "fields": record["fields"], "image_url": f"/items/{item_id}/image"}


def _add_page_routes(app: FastAPI, swagger: Path | None) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        if swagger is None:  # pragma: no cover
            raise HTTPException(404, "API docs need the fastapi-offline package; the schema is at /openapi.json")
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")


def _health(live: LiveIndex, encoder: QueryEncoder, start_warnings: list[str], max_upload_bytes: int,
            max_k: int) -> dict:
    """The /health body for the index version being served now."""
    gallery = live.current
    gallery_meta = gallery.manifest["gallery_model"]
    manifest = gallery.manifest
    all_warnings = start_warnings + ([live.error] if live.error else [])
    return {
        "status": "ok", "version": hetsearch.__version__, "query_model": encoder.describe(),
        "gallery_model": {"model_id": gallery.gallery_model_id, "backbone": gallery_meta["spec"]["backbone"],
                          "embedding_dim": gallery.embedding_dim, "params": gallery_meta.get("params"),
                          "mflops": round(gallery_meta["flops"] / 1e6, 3) if gallery_meta.get("flops") else None},
        "items": len(gallery),
        "index": {"items": len(gallery), "index_type": manifest["index_type"],
                  "index_params": manifest["index_params"], "search_params": manifest.get("search_params", {}),
                  "embedding_dim": gallery.embedding_dim, "created_at": manifest.get("created_at"),
                  "updated_at": manifest.get("updated_at"), "revision": manifest.get("revision")},
        "max_upload_bytes": max_upload_bytes, "max_k": max_k, "warnings": all_warnings}


def _add_health_route(app: FastAPI, live: LiveIndex, encoder: QueryEncoder, start_warnings: list[str],
                      max_upload_bytes: int, max_k: int) -> None:
    @app.get("/health", response_model=Health, summary="Service status, models and index size")
    def health() -> dict:
        return _health(live, encoder, start_warnings, max_upload_bytes, max_k)


class _Answer:
    """Answers one search request: decode the upload, embed it, search one index version."""

    def __init__(self, live: LiveIndex, encoder: QueryEncoder, budget: PixelBudget, *, max_pixels: int,
                 offload: bool, threads: int | None):
        self.live, self.encoder, self.budget, self.max_pixels = live, encoder, budget, max_pixels
        self.offload, self.threads = offload, threads
        self.channels, self.image_size, _ = encoder.input_shape
        self.resize = encoder.resize
        self.thread_state = threading.local()

    def _decode(self, data: bytes, filename: str | None):
        name = f"upload {filename[:100]!r}" if filename else "upload"
        decoded_size: dict = {}
        try:
            return decode_image_bytes(data, self.channels, self.image_size, self.resize, name=name,
                                      max_pixels=self.max_pixels, budget=self.budget, info=decoded_size)
        except ImageRejected as exc:
            raise HTTPException(exc.status_code, str(exc)) from None
        finally:
            if decoded_size.get("pixels", 0) > TRIM_ABOVE_PIXELS:
                trim()

    def __call__(self, data: bytes, filename: str | None, k: int, started: float) -> dict:
        if self.offload and not getattr(self.thread_state, "ready", False):
            # OpenMP thread counts are per thread: apply the start-up setting to this pool thread
            set_omp_threads(self.threads)
            self.thread_state.ready = True
        gallery = self.live.current  # this request uses one version of the index from start to end
        read_done = time.perf_counter()
        image = self._decode(data, filename)
        decoded = time.perf_counter()
        embedding = self.encoder.embed(image[None])
        embedded = time.perf_counter()
        hits = gallery.search(embedding, k)[0]
        done = time.perf_counter()
        return {"query_model": self.encoder.meta.model_id, "gallery_model": gallery.gallery_model_id, "k": k,
                "results": [{"rank": rank, "score": hit.score,
                             **_item_record(gallery, hit.id, {"label": hit.label, "source": hit.source,
                                                              "fields": hit.fields})}
                            for rank, hit in enumerate(hits, start=1)],
                "timings": {"read_ms": (read_done - started) * 1e3, "decode_ms": (decoded - read_done) * 1e3,
                            "embed_ms": (embedded - decoded) * 1e3, "search_ms": (done - embedded) * 1e3,
                            "total_ms": (done - started) * 1e3}}


def _add_search_route(app: FastAPI, answer: _Answer, max_upload_bytes: int, max_k: int) -> None:
    @app.post("/search", response_model=SearchResponse, responses=ERRORS,
              summary="Top-k gallery items for an uploaded query image")
    async def search(file: UploadFile = File(..., description="the query image (PNG, JPEG, GIF, BMP, WebP, TIFF, ...)"),
                     k: int = Form(10, ge=1, le=max_k, description=f"number of results (1..{max_k})")) -> dict:
        started = time.perf_counter()
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload too large; the limit is {max_upload_bytes} bytes")
        if answer.offload:
            return await run_in_threadpool(answer, data, file.filename, k, started)
        return answer(data, file.filename, k, started)


def _parse_item_id(item_id: str) -> int:
    value = int(item_id)  # the path pattern admits decimal digits only
    if value > MAX_ITEM_ID:
        raise HTTPException(404, f"no item with id {item_id} in this index (ids are below 2^63)")
    return value


def _add_item_routes(app: FastAPI, live: LiveIndex) -> None:
    item_id_param = PathParam(..., pattern=ITEM_ID_PATTERN, max_length=19, examples=["0"],
                              description="item id: decimal digits (0 .. 2^63-1), as returned by /search")

    @app.get("/items/{item_id}", response_model=Item, responses={404: {"model": Error}},
             summary="An item's metadata")
    def get_item(item_id: str = item_id_param) -> dict:
        value = _parse_item_id(item_id)
        gallery = live.current
        record = gallery.item(value)
        if record is None:
            raise HTTPException(404, f"no item with id {value} in this index")
        return _item_record(gallery, value, record)

    @app.get("/items/{item_id}/image", response_class=Response, summary="An item's image (PNG)",
             responses={200: {"content": {"image/png": {}}, "description": "the gallery image as the gallery "
                                                                          "model saw it"},
                        404: {"model": Error}})
    def get_item_image(item_id: str = item_id_param) -> Response:
        value = _parse_item_id(item_id)
        thumbnail = live.current.thumbnail(value)
        if thumbnail is None:
            raise HTTPException(404, f"no item with id {value} in this index")
        return Response(encode_png(thumbnail), media_type="image/png",
                        headers={"Cache-Control": "public, max-age=3600"})


def create_app(gallery: GalleryIndex | LiveIndex, encoder: QueryEncoder, *,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_k: int = 100,
               max_pixels: int = DEFAULT_MAX_PIXELS, warnings: list[str] | None = None, offload: bool = True,
               threads: int | None = 1, decode_budget_pixels: int | None = None) -> FastAPI:
    """The app; ``gallery`` must already have passed the model contract check for ``encoder``.

    ``gallery``: a `GalleryIndex` (served as loaded) or a `LiveIndex` (follows new versions of the
    folder; its watcher runs while the app runs). ``decode_budget_pixels``: pixels decoded at once
    across all requests (default ``max_pixels``: one largest image, or many small ones)."""
    live = gallery if isinstance(gallery, LiveIndex) else LiveIndex(gallery, interval=None)
    start_warnings = list(warnings or []) + list(live.current.warnings)
    app, swagger = _new_app(live, encoder, max_upload_bytes)
    app.state.live_index = live
    budget = PixelBudget(decode_budget_pixels or max_pixels)
    app.state.pixel_budget = budget
    _add_page_routes(app, swagger)
    _add_health_route(app, live, encoder, start_warnings, max_upload_bytes, max_k)
    answer = _Answer(live, encoder, budget, max_pixels=max_pixels, offload=offload, threads=threads)
    _add_search_route(app, answer, max_upload_bytes, max_k)
    _add_item_routes(app, live)
    return app
