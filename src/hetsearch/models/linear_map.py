"""Folding an affine map of the embedding into a model's embedding head (exact in eval mode).

A catalogue refresh may end with a closed-form affine map of the query embedding, e ↦ eB + c
(`hetsearch.train.refresh`, `refresh.linear`). The embedding head is Linear (no bias) + BatchNorm,
which in eval mode is itself affine: e = (Wf − μ)·γ/s + β with s = sqrt(var + eps). Folding the
map gives a head of the same architecture, so the refreshed model keeps its spec, checkpoint format,
ONNX export and cost: W' = (diag(γ/s) W)ᵀ-composed with B, and a BatchNorm that only adds a bias
(mean 0, var 1 − eps, weight 1, bias β' = (β − μγ/s) B + c).
"""

from __future__ import annotations

import torch

from hetsearch.errors import ConfigError
from hetsearch.models.embedding_model import EmbeddingModel


@torch.no_grad()
def fold_affine_map(model: EmbeddingModel, matrix: torch.Tensor, bias: torch.Tensor) -> EmbeddingModel:
    """``model`` (in place) now embeds ``e B + c`` where e was its raw embedding; ``matrix`` is
    (D, D), ``bias`` (D,)."""
    if model.embeds_backbone_features:
        raise ConfigError("refresh.linear: the query model embeds its backbone features "
                          "(model.embedding_layer=backbone), which have no head to fold a map into; "
                          "use refresh.linear=false")
    head = model.embedding_head
    proj, norm = head.proj, head.norm
    dim = proj.weight.shape[0]
    if tuple(matrix.shape) != (dim, dim) or tuple(bias.shape) != (dim,):
        raise ValueError(f"fold_affine_map: expected a ({dim}, {dim}) map and a ({dim},) bias")
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)        # γ/s
    shift = norm.bias - norm.running_mean * scale                        # β − μγ/s
    matrix, bias = matrix.to(proj.weight), bias.to(proj.weight)
    proj.weight.copy_(matrix.t() @ (scale[:, None] * proj.weight))      # (eB)ᵀ = Bᵀ diag(γ/s) W f
    norm.running_mean.zero_()
    norm.running_var.fill_(1.0 - norm.eps)
    norm.weight.fill_(1.0)
    norm.bias.copy_(shift @ matrix + bias)
    return model
