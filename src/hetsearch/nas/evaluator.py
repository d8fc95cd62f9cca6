"""Candidate evaluation with inherited supernet weights (the search's accuracy oracle).

For an architecture a: fix the supernet's path to a, recompute every batch norm's statistics on
a few training batches (reset, cumulative average, train-mode forwards without gradients; the
weights are untouched), embed the *validation* split (never test) and measure

- homogeneous M(a, a): validation items query the other validation items, both embedded by a;
- heterogeneous M(a, g): validation items embedded by a query the validation items embedded by
  the gallery model g (each query excluded from its own results).

Results are cached per architecture id. Calibration batches and the validation subset are fixed
(seeded) for the whole search, so every candidate is measured on the same data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from hetsearch.data import ImageSet, stratified_split
from hetsearch.errors import ConfigError
from hetsearch.eval.embed import embed
from hetsearch.eval.metrics import retrieval_metrics
from hetsearch.models import EmbeddingModel
from hetsearch.models.contract import space_mismatch
from hetsearch.nas.cost import CostTable
from hetsearch.nas.space import Architecture


@dataclass
class EvaluatorConfig:
    calib_batches: int = 8           # training batches used to recompute BN statistics
    calib_batch_size: int = 256
    val_items: Optional[int] = None  # stratified cap on the validation split (None: all of it)
    embed_batch_size: int = 1024
    seed: int = 0


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Replace every BN's running statistics by the exact average over `batches` (float inputs in
    [0, 1]) of the model's current path; weights and the train/eval mode are restored."""
    if not batches:
        raise ConfigError("BN recalibration needs at least one batch (calib_batches >= 1)")
    norms = _batch_norms(model)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    try:
        model.train()
        for x in batches:
            model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


class CandidateEvaluator:
    """M(a, a) and M(a, g) of supernet paths on the validation split; see the module doc."""

    def __init__(self, supernet: EmbeddingModel, gallery: EmbeddingModel, train: ImageSet, val: ImageSet,
                 cfg: EvaluatorConfig | None = None, device: str | torch.device = "cpu"):
        if supernet.spec.backbone != "cmpnas_supernet":
            raise ConfigError(f"the candidate evaluator needs a cmpnas_supernet model, got {supernet.spec.backbone!r}")
        mismatch = space_mismatch(supernet.spec, gallery.spec)
        if mismatch is not None:
            raise ConfigError(f"{mismatch.describe('the supernet', 'the gallery model')}; heterogeneous evaluation "
                              f"needs the same embedding space (set {mismatch.fix})")
        self.cfg = cfg or EvaluatorConfig()
        self.device = torch.device(device)
        self.model = supernet.to(self.device).eval()
        self.cost = CostTable(self.model.backbone.space, image_size=supernet.spec.image_size,
                              in_chans=supernet.spec.in_chans, embedding_dim=supernet.spec.embedding_dim)
        generator = torch.Generator().manual_seed(self.cfg.seed)
        if len(val) < 2:
            raise ConfigError(f"the validation split has {len(val)} items; candidate evaluation needs at least 2 "
                              "(raise data.val_fraction)")
        if self.cfg.val_items is not None and self.cfg.val_items < len(val):
            _, keep = stratified_split(val.labels, int(self.cfg.val_items), generator)
            val = val.subset(keep)
        self.val = val
        self.val_labels = val.labels.numpy()
        n_calib = min(len(train), self.cfg.calib_batches * self.cfg.calib_batch_size)
        order = torch.randperm(len(train), generator=generator)[:n_calib]
        calib = train.images[order].float().div_(255)
        self.calib_batches = [calib[i:i + self.cfg.calib_batch_size].to(self.device)
                              for i in range(0, n_calib, self.cfg.calib_batch_size)]
        self.gallery_val = embed(gallery.to(self.device), val.images, batch_size=self.cfg.embed_batch_size,
                                 device=self.device)
        self.cache: dict[str, dict] = {}

    def embed_val(self, arch: Architecture) -> np.ndarray:
        """Validation embeddings of `arch` with inherited weights and recalibrated BN."""
        self.model.backbone.set_path(arch)
        try:
            recalibrate_bn(self.model, self.calib_batches)
            return embed(self.model, self.val.images, batch_size=self.cfg.embed_batch_size, device=self.device)
        finally:
            self.model.backbone.set_path(None)

    def __call__(self, arch: Architecture) -> dict:
        if arch.id in self.cache:
            return self.cache[arch.id]
        start = time.perf_counter()
        emb = self.embed_val(arch)
        homo = retrieval_metrics(emb, self.val_labels, emb, self.val_labels, ks=(1,), exclude_self=True)
        hetero = retrieval_metrics(emb, self.val_labels, self.gallery_val, self.val_labels, ks=(1,),
                                   exclude_self=True)
        cost = self.cost(arch)
        result = {"arch": arch.id, "mflops": cost.flops / 1e6, "params": cost.params,
                  "homo_recall_at_1": float(homo["recall_at_1"]), "homo_map_at_r": float(homo["map_at_r"]),
                  "hetero_recall_at_1": float(hetero["recall_at_1"]), "hetero_map_at_r": float(hetero["map_at_r"]),
                  "eval_seconds": round(time.perf_counter() - start, 3)}
        self.cache[arch.id] = result
        return result
