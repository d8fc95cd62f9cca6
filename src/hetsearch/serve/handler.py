"""The search request handler: decode an upload, embed it with the query model, search one version
of the index, and the JSON record of a gallery item."""

from __future__ import annotations

import threading
import time

from fastapi import HTTPException

from hetsearch.data.decode import ImageRejected, PixelBudget, decode_image_bytes
from hetsearch.export.encoders import QueryEncoder
from hetsearch.index.faiss_index import set_omp_threads
from hetsearch.index.gallery import GalleryIndex
from hetsearch.serve.memory import trim
from hetsearch.serve.reload import LiveIndex

TRIM_ABOVE_PIXELS = 4_000_000  # after decoding more, hand free heap memory back to the system


def item_record(index: GalleryIndex, item_id: int, record: dict) -> dict:
    return {"id": item_id, "label": record["label"], "source": index.public_source(record["source"]),
            "fields": record["fields"], "image_url": f"/items/{item_id}/image"}


class SearchHandler:
    """Answers one search request: decode the upload, embed it, search one index version."""

    def __init__(self, live: LiveIndex, encoder: QueryEncoder, budget: PixelBudget, *, max_pixels: int,
                 offload: bool, threads: int | None):
        self.live, self.encoder, self.budget, self.max_pixels = live, encoder, budget, max_pixels
        self.offload, self.threads = offload, threads
        self.decode = encoder.preprocessing.decode_spec()  # the query model's size, channels, resize, background
        self.thread_state = threading.local()

    def _decode(self, data: bytes, filename: str | None, encoder: QueryEncoder):
        name = f"upload {filename[:100]!r}" if filename else "upload"
        decoded_size: dict = {}
        spec = self.decode if encoder is self.encoder else encoder.preprocessing.decode_spec()
        try:
            return decode_image_bytes(data, spec, name=name, max_pixels=self.max_pixels, budget=self.budget,
                                      info=decoded_size)
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
        served = self.live.state  # one index version and one query model from start to end
        gallery, encoder = served.gallery, served.encoder or self.encoder
        read_done = time.perf_counter()
        image = self._decode(data, filename, encoder)
        decoded = time.perf_counter()
        embedding = encoder.embed(image[None])
        embedded = time.perf_counter()
        hits = gallery.search(embedding, k)[0]
        done = time.perf_counter()
        return {"query_model": encoder.meta.model_id, "gallery_model": gallery.gallery_model_id, "k": k,
                "results": [{"rank": rank, "score": hit.score,
                             **item_record(gallery, hit.id, {"label": hit.label, "source": hit.source,
                                                              "fields": hit.fields})}
                            for rank, hit in enumerate(hits, start=1)],
                "timings": {"read_ms": (read_done - started) * 1e3, "decode_ms": (decoded - read_done) * 1e3,
                            "embed_ms": (embedded - decoded) * 1e3, "search_ms": (done - embedded) * 1e3,
                            "total_ms": (done - started) * 1e3}}
