"""`contrastive`: asymmetric InfoNCE of the query embedding against the gallery embedding bank.

    L = -log  exp(q̂·ĝ⁺/τ) / (exp(q̂·ĝ⁺/τ) + Σ_n exp(q̂·ĝ_n/τ))

q̂ = φ_q(view v of image i) (normalised), ĝ⁺ = bank[i, v] = φ_g of the very same pixels, ĝ_n =
negatives from the bank (Budnik & Avrithis, "Asymmetric metric learning for knowledge transfer",
CVPR 2021: the student is trained against the teacher's embeddings, label-free). Only the query
side moves: the gallery embeddings are constants, so the query model learns to land next to its
own image's gallery embedding and away from the others' — exactly what a heterogeneous search
ranks. `compat.gallery_aware.negatives`:
- M > 0: M bank rows drawn uniformly per step (item and view; rows of the query's own image are
  masked out). Cost B x M x D per step; 4096 negatives cost a few percent of a light model's step.
- 0: in-batch: the other images' positives in the batch are the negatives (B - 1 of them).
- -1: the full bank (view 0 of every image): the naive version, a B x N softmax per step.
`compat.gallery_aware.temperature` is τ. `compat.gallery_aware.hard_negatives` h > 0 adds, for
each query, the gallery embeddings of its image's h nearest training images (the gallery's own
neighbours, `GalleryBank.neighbors`, computed once): the query must find its own gallery embedding
among its nearest look-alikes, the instance-level precision a Recall@1 against the gallery needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hetsearch.compat.bank_terms import BankTerm
from hetsearch.compat.base import BatchRefs, register_compat_method
from hetsearch.errors import ConfigError


@register_compat_method("contrastive")
class ContrastiveTerm(BankTerm):
    """Asymmetric InfoNCE of the query embedding against the gallery embedding bank (label-free)."""

    salt = 11
    method_name = "contrastive"

    def __init__(self, bank, match_views: bool, temperature: float, negatives: int, hard_negatives: int = 0):
        if not temperature > 0:
            raise ConfigError(f"compat.gallery_aware.temperature: expected > 0, got {temperature}")
        if negatives < -1:
            raise ConfigError(f"compat.gallery_aware.negatives: expected -1 (full bank), 0 (in-batch) or a "
                              f"positive count, got {negatives}")
        if hard_negatives < 0:
            raise ConfigError(f"compat.gallery_aware.hard_negatives: expected >= 0, got {hard_negatives}")
        super().__init__("contrastive", bank, match_views, {"temperature": temperature, "negatives": negatives,
                                                            "hard_negatives": hard_negatives})
        self.temperature, self.negatives, self.hard_negatives = float(temperature), int(negatives), int(hard_negatives)

    @classmethod
    def from_config(cls, cfg, bank) -> "ContrastiveTerm":
        ga = cfg.gallery_aware
        return cls(bank, cfg.bank.match_views, ga.temperature, ga.negatives, ga.hard_negatives)

    def loss(self, q: torch.Tensor, refs: BatchRefs, bank: torch.Tensor) -> torch.Tensor:
        pos = self.positives(refs, bank)
        if self.negatives == 0:
            logits = q @ pos.t() / self.temperature
            return F.cross_entropy(logits, torch.arange(len(q), device=q.device))
        if self.negatives == -1:
            neg, items = bank[:, 0].float(), torch.arange(bank.shape[0], device=bank.device)
        else:
            neg, items = self.sample(refs, bank, self.negatives)
        pos_logit = (q * pos).sum(1, keepdim=True)
        neg_logits = (q @ neg.t()).masked_fill(items.unsqueeze(0) == refs.indices.unsqueeze(1), float("-inf"))
        parts = [pos_logit, neg_logits]
        if self.hard_negatives:
            near = self.bank.neighbors(self.hard_negatives, bank.device)[refs.indices]  # (B, h)
            parts.append(torch.einsum("bd,bhd->bh", q, bank[near, 0].float()))
        logits = torch.cat(parts, dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.int64, device=q.device))

