"""The service's routes: the web page and API docs, ``/health``, ``POST /search`` and the items."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, Path as PathParam, UploadFile
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

import hetsearch
from hetsearch.data.decode import encode_png
from hetsearch.export.encoders import QueryEncoder
from hetsearch.serve.handler import SearchHandler, item_record
from hetsearch.serve.reload import LiveIndex
from hetsearch.serve.schemas import ERRORS, Error, Health, Item, SearchResponse

STATIC_DIR = Path(__file__).parent / "static"
MAX_ITEM_ID = 2**63 - 1  # item ids are SQLite / FAISS int64
ITEM_ID_PATTERN = r"^(0|[1-9][0-9]{0,18})$"  # decimal digits only: no sign, no decimal point, no exponent


def add_page_routes(app: FastAPI, swagger: Path | None) -> None:
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
    served = live.state
    gallery, encoder = served.gallery, served.encoder or encoder
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


def add_health_route(app: FastAPI, live: LiveIndex, encoder: QueryEncoder, start_warnings: list[str],
                      max_upload_bytes: int, max_k: int) -> None:
    @app.get("/health", response_model=Health, summary="Service status, models and index size")
    def health() -> dict:
        return _health(live, encoder, start_warnings, max_upload_bytes, max_k)


def add_search_route(app: FastAPI, answer: SearchHandler, max_upload_bytes: int, max_k: int) -> None:
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


def add_item_routes(app: FastAPI, live: LiveIndex) -> None:
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
        return item_record(gallery, value, record)

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
