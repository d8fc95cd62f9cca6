"""The compatibility term a trainer adds to its classification loss.

A term sees the query model's (unnormalised) embeddings, the input batch and the labels, and
returns a scalar loss. Methods (BCT, L2, distillation, ...) register a builder by name, so the
trainer never branches on the method.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from hetsearch.errors import ConfigError


class CompatibilityTerm(Protocol):
    method: str
    gallery_model_id: str

    def __call__(self, embeddings: torch.Tensor, images: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> "CompatibilityTerm": ...


# builder(compat_cfg, *, model_spec, classes, train_set, run_dir, device) -> CompatibilityTerm
TermBuilder = Callable[..., CompatibilityTerm]
_METHODS: dict[str, TermBuilder] = {}


def register_compat_method(name: str) -> Callable[[TermBuilder], TermBuilder]:
    def decorator(builder: TermBuilder) -> TermBuilder:
        _METHODS[name] = builder
        return builder

    return decorator


def compat_methods() -> list[str]:
    return ["none", *sorted(_METHODS)]


def build_compat_term(cfg, **context) -> CompatibilityTerm | None:
    """`None` for method "none" (independent training); otherwise the registered term."""
    if cfg.method == "none":
        return None
    if cfg.method not in _METHODS:
        raise ConfigError(f"compat.method: unknown method {cfg.method!r}; "
                          f"expected one of {', '.join(compat_methods())}")
    if not cfg.gallery_model:
        raise ConfigError(f"compat.gallery_model: method {cfg.method!r} needs the path of a gallery "
                          "model checkpoint (e.g. compat.gallery_model=runs/gallery/model.pt)")
    return _METHODS[cfg.method](cfg, **context)
