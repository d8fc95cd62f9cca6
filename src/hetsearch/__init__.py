"""hetsearch: heterogeneous visual search with compatible gallery and query embedding models."""

__version__ = "0.1.0"
