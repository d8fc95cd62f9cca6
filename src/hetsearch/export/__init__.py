"""Query-model export (ONNX, TorchScript) with contract metadata and a parity check, and the
runtime-independent `QueryEncoder` used by `hetsearch query` and the server."""

from hetsearch.export.encoders import ExportError, OnnxEncoder, QueryEncoder, TorchEncoder
from hetsearch.export.exporter import FORMATS, export_model, parity_check
from hetsearch.export.runtime import RUNTIMES, load_query_encoder

__all__ = ["FORMATS", "RUNTIMES", "ExportError", "OnnxEncoder", "QueryEncoder", "TorchEncoder",
           "export_model", "load_query_encoder", "parity_check"]
