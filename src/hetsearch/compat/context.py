"""`context`: contextual similarity distillation from the bank (CSD; Wu et al., CVPR 2022).

The context of a training view (i, v) is the gallery embedding of that very view, ĝ⁺ = bank[i, v],
and the gallery embeddings (view 0) of image i's k nearest training images in the gallery's own
space (`GalleryBank.neighbors`, computed once). The gallery's similarities to the context define
p_g = softmax(ĝ⁺·c/τ); the query's define p_q = softmax(q̂·c/τ) over the same rows; the loss is
KL(p_g ‖ p_q). Label-free.

Where `relational` matches the gallery's ranking of *random* anchors (coarse structure: which
classes are near), the context is the few look-alikes a Recall@1 against the gallery must tell
apart, with the gallery's soft similarities as the target instead of `contrastive`'s one-hot
(hard negatives). Because ĝ⁺ is in the context, the loss is zero only when q̂ also lands where
ĝ⁺ does relative to its neighbours. `compat.gallery_aware.context` is k,
`compat.gallery_aware.context_temperature` is τ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hetsearch.compat.bank_terms import BankTerm
from hetsearch.compat.base import BatchRefs, register_compat_method
from hetsearch.errors import ConfigError


@register_compat_method("context")
class ContextTerm(BankTerm):
    """Match the gallery's similarities to each image's own gallery neighbourhood: KL(p_g || p_q)."""

    method_name = "context"

    def __init__(self, bank, match_views: bool, neighbours: int, temperature: float):
        if neighbours < 1:
            raise ConfigError(f"compat.gallery_aware.context: expected a positive neighbour count, got {neighbours}")
        if not temperature > 0:
            raise ConfigError(f"compat.gallery_aware.context_temperature: expected > 0, got {temperature}")
        super().__init__("context", bank, match_views, {"context": neighbours, "context_temperature": temperature})
        self.neighbours, self.temperature = int(neighbours), float(temperature)

    @classmethod
    def from_config(cls, cfg, bank) -> "ContextTerm":
        ga = cfg.gallery_aware
        return cls(bank, cfg.bank.match_views, ga.context, ga.context_temperature)

    def loss(self, q: torch.Tensor, refs: BatchRefs, bank: torch.Tensor) -> torch.Tensor:
        pos = self.positives(refs, bank)                                          # (B, D)
        near = self.bank.neighbors(self.neighbours, bank.device)[refs.indices]    # (B, k)
        context = torch.cat([pos.unsqueeze(1), bank[near, 0].float()], dim=1)     # (B, 1 + k, D)
        log_p_g = F.log_softmax(torch.einsum("bd,bkd->bk", pos, context) / self.temperature, dim=1)
        log_p_q = F.log_softmax(torch.einsum("bd,bkd->bk", q, context) / self.temperature, dim=1)
        return (log_p_g.exp() * (log_p_g - log_p_q)).sum(1).mean()
