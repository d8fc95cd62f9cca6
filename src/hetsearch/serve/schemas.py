"""The HTTP API's request and response schemas (what ``/openapi.json`` describes)."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field


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
