"""Backbone registry: `create_backbone(name, **kwargs)` instead of if/else ladders over names.

A backbone factory takes `in_chans`, `image_size` and its own keyword options and returns
`(module, feature_dim)` where `module(x)` maps `N×C×H×W` floats to pooled `N×feature_dim` features.
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from hetsearch.errors import ConfigError

BackboneFactory = Callable[..., tuple[nn.Module, int]]
_BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def decorator(factory: BackboneFactory) -> BackboneFactory:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    _import_builtin_backbones()
    return sorted(_BACKBONES)


def create_backbone(name: str, *, in_chans: int, image_size: int, **kwargs) -> tuple[nn.Module, int]:
    _import_builtin_backbones()
    if name not in _BACKBONES:
        raise ConfigError(f"model.backbone: unknown backbone {name!r}; known: {', '.join(sorted(_BACKBONES))}")
    try:
        return _BACKBONES[name](in_chans=in_chans, image_size=image_size, **kwargs)
    except TypeError as exc:  # unknown keyword option for this backbone
        raise ConfigError(f"model.backbone_args for {name!r}: {exc}") from exc


# Modules that register backbones when imported. Imported lazily so that they (e.g. the NAS
# search space) can themselves import this registry.
_BUILTIN_BACKBONE_MODULES = ("hetsearch.models.backbones", "hetsearch.nas.supernet")


def _import_builtin_backbones() -> None:
    for module in _BUILTIN_BACKBONE_MODULES:
        importlib.import_module(module)
