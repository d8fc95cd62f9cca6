"""Load the index and query model (checking the model contract) and run the app with uvicorn."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hetsearch.export.encoders import QueryEncoder
from hetsearch.export.runtime import load_query_encoder
from hetsearch.index.faiss_index import set_omp_threads
from hetsearch.index.gallery import GalleryIndex, open_index
from hetsearch.index.verify import run_verification
from hetsearch.serve.app import DEFAULT_MAX_UPLOAD_BYTES, create_app
from hetsearch.serve.memory import release_freed_memory_promptly
from hetsearch.serve.reload import LiveIndex


def set_threads(threads: Optional[int]) -> None:
    """Intra-op threads for PyTorch and FAISS (ONNX Runtime takes them at session creation)."""
    if not threads:
        return
    torch.set_num_threads(int(threads))
    set_omp_threads(threads)


def warm_up(gallery: GalleryIndex, encoder: QueryEncoder, rounds: int = 3) -> None:
    """First calls allocate / optimise; keep that out of the first request."""
    warm = np.zeros((1, *encoder.input_shape), dtype=np.uint8)
    for _ in range(rounds):
        gallery.search(encoder.embed(warm), 10)


def load_service(index_dir: str | Path, query_model: str | Path, *, runtime: str = "auto",
                 threads: Optional[int] = 1, allow_incompatible: bool = False,
                 search_params: Optional[dict] = None, verify: str = "off") -> tuple[GalleryIndex, QueryEncoder]:
    """(index, encoder) after the contract check (and, with ``verify`` warn/refuse, the measured
    check of `hetsearch.index.verify`, whose warnings join ``index.warnings``); warmed up."""
    set_threads(threads)
    encoder = load_query_encoder(query_model, runtime=runtime, threads=threads)
    gallery = open_index(index_dir, query_meta=encoder.meta, allow_incompatible=allow_incompatible,
                         search_params=search_params)
    gallery.warnings += run_verification(gallery, encoder, verify)
    warm_up(gallery, encoder)
    return gallery, encoder


def run_server(index_dir: str | Path, query_model: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
               runtime: str = "auto", threads: Optional[int] = 1, allow_incompatible: bool = False,
               search_params: Optional[dict] = None, max_upload_bytes: Optional[int] = None, max_k: int = 100,
               access_log: bool = False, log_level: str = "info", log=print, verify: str = "off",
               reload_interval: float = 1.0) -> None:
    import uvicorn  # only here: starting the server needs it, loading the service does not

    # Requests hop between the event loop and the worker threads; a short GIL switch interval
    # (default 5 ms) keeps those hops from adding milliseconds of latency under load.
    sys.setswitchinterval(0.0005)
    release_freed_memory_promptly()  # process-wide: decoded images' buffers go back to the system when freed

    started = time.perf_counter()
    gallery, encoder = load_service(index_dir, query_model, runtime=runtime, threads=threads,
                                    allow_incompatible=allow_incompatible, search_params=search_params,
                                    verify=verify)
    for message in gallery.warnings:
        log(f"warning: {message}")
    live = LiveIndex(gallery, interval=reload_interval or None, warmup=lambda fresh, enc: warm_up(fresh, enc, 1),
                     log=log, encoder=encoder, model_path=query_model, verify=verify,
                     load_encoder=lambda path: load_query_encoder(path, runtime=runtime, threads=threads))
    app = create_app(live, encoder, max_upload_bytes=max_upload_bytes or DEFAULT_MAX_UPLOAD_BYTES, max_k=max_k,
                     threads=threads)
    info = encoder.describe()
    log(f"index {index_dir}: {len(gallery)} items ({gallery.manifest['index_type']}), gallery model "
        f"{gallery.gallery_model_id}; query model {info['model_id']} ({info['mflops']} MFLOPs, runtime "
        f"{info['runtime']}); ready in {time.perf_counter() - started:.1f}s")
    log(f"serving on http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level=log_level)
