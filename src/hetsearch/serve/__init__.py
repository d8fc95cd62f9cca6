"""The search service: FastAPI app (`create_app`), loading with the contract check (`load_service`)
and the uvicorn runner (`run_server`). Imported lazily so that `hetsearch --help` stays fast."""

from __future__ import annotations

import importlib

_EXPORTS = {"create_app": "hetsearch.serve.app", "load_service": "hetsearch.serve.server",
            "run_server": "hetsearch.serve.server"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hetsearch.serve' has no attribute {name!r}")
