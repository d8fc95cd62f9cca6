"""Backbone registry (`BACKBONES`, a `hetsearch.utils.registry.Registry`): `create_backbone(name,
**kwargs)` instead of if/else ladders over names.

A backbone factory takes `in_chans`, `image_size` and its own keyword options and returns
`(module, feature_dim)` where `module(x)` maps `N×C×H×W` floats to pooled `N×feature_dim` features.

A backbone may declare its pretrained input normalisation (`input_norm`: a callable returning the
RGB ``(mean, std)`` of its pretrained weights' config, asked only when a model does not set
``model.mean``/``model.std``); backbones without pretrained weights fall back to the historical
0.5 / 0.25 for every channel.

The built-in backbones register when `hetsearch.models` is imported (its `__init__` imports
`models.backbones` and `models.cmpnas`); a package above `models` registers its own when it is
imported (the search's `cmpnas_supernet`: `hetsearch.nas`). The registry imports nothing.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from hetsearch.errors import ConfigError
from hetsearch.registries import BACKBONES

BackboneFactory = Callable[..., tuple[nn.Module, int]]
NormFactory = Callable[..., tuple[Sequence[float], Sequence[float]]]
_INPUT_NORMS: dict[str, NormFactory] = {}
FALLBACK_MEAN, FALLBACK_STD = 0.5, 0.25  # the scalar every model used before per-channel normalisation


def register_backbone(name: str, input_norm: NormFactory | None = None, *,
                      description: str | None = None) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register a backbone factory as ``model.backbone: name`` (its docstring, or
    ``description``, is the line `hetsearch list` shows)."""
    def decorator(factory: BackboneFactory) -> BackboneFactory:
        BACKBONES.add(name, factory, description=description)
        if input_norm is not None:
            _INPUT_NORMS[name] = input_norm
        return factory

    return decorator


def default_input_norm(name: str, in_chans: int, **backbone_args) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) for ``in_chans`` channels: the backbone's pretrained config when it
    declares one (RGB; a 1-channel input takes the average), else 0.5 / 0.25."""
    norm = _INPUT_NORMS.get(name)
    if norm is None:
        return [FALLBACK_MEAN] * in_chans, [FALLBACK_STD] * in_chans
    mean, std = (list(map(float, v)) for v in norm(**backbone_args))
    if in_chans == len(mean):
        return mean, std
    return [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans


list_backbones = BACKBONES.names


def create_backbone(name: str, *, in_chans: int, image_size: int, **kwargs) -> tuple[nn.Module, int]:
    factory = BACKBONES[name]
    try:
        return factory(in_chans=in_chans, image_size=image_size, **kwargs)
    except TypeError as exc:  # unknown keyword option for this backbone
        raise ConfigError(f"model.backbone_args for {name!r}: {exc}") from exc
