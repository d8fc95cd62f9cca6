"""`model.pretrained_file=PATH`: start a backbone from a local timm or torchvision weights file.

Nothing is downloaded: the user brings the file (``torch.save(model.state_dict(), PATH)`` of a
timm or torchvision model, or a checkpoint holding it under ``state_dict`` / ``model``).

Matching: every backbone tensor takes the file's tensor of the same name, also trying the name
without its first component (our torchvision wrappers hold the net as ``net.``) and file names
without ``module.`` / ``backbone.`` prefixes. A first convolution whose input channels differ is
adapted as timm's ``adapt_input_conv`` does: 3 -> 1 channel sums the RGB filters (a grey image
g = r = g = b then gives the same response), 1 -> 3 repeats them divided by 3. Tensors of another
shape (e.g. our small-input stems, or the deep stem of our ResNets against timm's plain stem) keep
their fresh initialisation and are listed. A file that matches nothing is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from hetsearch.errors import ConfigError

_PREFIXES = ("module.", "backbone.", "model.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained_file: {path}: no such file (a timm/torchvision state_dict saved with "
                          "torch.save)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors vary
        raise ConfigError(f"model.pretrained_file: {path}: not a readable PyTorch weights file "
                          f"({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ConfigError(f"model.pretrained_file: {path}: expected a state_dict (name -> tensor)")
    out = {}
    for name, tensor in payload.items():
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = tensor
    return out


def _adapt_input_conv(source: torch.Tensor, target_shape: torch.Size) -> torch.Tensor | None:
    """A conv weight (O, I, k, k) adapted to another number of input channels, or None."""
    if source.ndim != 4 or len(target_shape) != 4 or source.shape[0] != target_shape[0] \
            or source.shape[2:] != target_shape[2:]:
        return None
    have, want = source.shape[1], target_shape[1]
    if want == 1:
        return source.sum(dim=1, keepdim=True)
    if have == 1:
        return source.repeat(1, want, 1, 1) / want
    return None


def load_pretrained_backbone(backbone: nn.Module, path: str | Path, *, backbone_name: str = "",
                             log=None) -> dict:
    """Copy the matching tensors of ``path`` into ``backbone`` (see module doc); returns a summary."""
    state = read_state_dict(path)
    target = backbone.state_dict()
    loaded, adapted, missing = {}, [], []
    for name, tensor in target.items():
        candidates = [name] + ([name.split(".", 1)[1]] if "." in name else [])
        source = next((state[c] for c in candidates if c in state), None)
        if source is None:
            missing.append(name)
            continue
        if source.shape == tensor.shape:
            loaded[name] = source.to(tensor.dtype)
            continue
        conv = _adapt_input_conv(source, tensor.shape)
        if conv is not None:
            loaded[name] = conv.to(tensor.dtype)
            adapted.append(name)
        else:
            missing.append(f"{name} (shape {tuple(tensor.shape)}, file {tuple(source.shape)})")
    weights = [n for n in target if not n.endswith("num_batches_tracked")]
    if not any(n in loaded for n in weights):
        example = ", ".join(list(state)[:3])
        raise ConfigError(f"model.pretrained_file: {path}: no tensor matches backbone {backbone_name!r} (its first names: "
                          f"{', '.join(list(target)[:3])}; the file's: {example}); give the weights of the same "
                          "timm/torchvision architecture")
    merged = dict(target)
    merged.update(loaded)
    backbone.load_state_dict(merged)
    summary = {"file": str(path), "loaded": len(loaded), "total": len(target), "adapted_input_conv": adapted,
               "not_loaded": missing}
    message = (f"model.pretrained_file: loaded {len(loaded)}/{len(target)} backbone tensors from {path}"
               + (f"; first conv adapted to {next(iter(loaded[a].shape[1] for a in adapted))} channel(s): "
                  f"{', '.join(adapted)}" if adapted else "")
               + (f"; not loaded (kept fresh): {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}"
                  if missing else ""))
    (log or (lambda m: print(m, file=sys.stderr, flush=True)))(message)
    return summary
