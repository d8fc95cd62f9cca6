"""`relational`: match the gallery's neighbour distribution over bank anchors (asymmetric RKD).

For each training view (i, v), A anchors are drawn from the bank (rows of image i itself are
excluded). The gallery's own embedding of the view, ĝ = bank[i, v], defines a distribution over
the anchors, p_g = softmax(ĝ·a/τ); the query's embedding defines p_q = softmax(q̂·a/τ) over the
same anchors, and the loss is KL(p_g ‖ p_q). Anchors are *gallery* embeddings on both sides, so
what is matched is how the query ranks gallery items — a heterogeneous search — rather than the
query model's own relations (relational / contrastive distillation: Park et al., CVPR 2019;
Tian et al., ICLR 2020, adapted to a frozen, precomputed teacher). No labels are used.
`compat.gallery_aware.anchors` is A, `compat.gallery_aware.relational_temperature` is τ.

Unlike `contrastive`, it does not ask q̂ to be ĝ: only to rank the gallery as ĝ does. It
carries the gallery's notion of which *other* images are near (class structure, near
duplicates), which pays off together with a positive-matching term (e.g. contrastive+relational).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hetsearch.compat.bank_terms import BankTerm
from hetsearch.compat.base import BatchRefs, register_compat_method
from hetsearch.errors import ConfigError


@register_compat_method("relational")
class RelationalTerm(BankTerm):
    """Match the gallery's neighbour distribution over sampled bank anchors: KL(p_g || p_q) (label-free)."""

    salt = 23
    method_name = "relational"

    def __init__(self, bank, match_views: bool, anchors: int, temperature: float):
        if anchors < 1:
            raise ConfigError(f"compat.gallery_aware.anchors: expected a positive count, got {anchors}")
        if not temperature > 0:
            raise ConfigError(f"compat.gallery_aware.relational_temperature: expected > 0, got {temperature}")
        super().__init__("relational", bank, match_views, {"anchors": anchors, "relational_temperature": temperature})
        self.anchors, self.temperature = int(anchors), float(temperature)

    @classmethod
    def from_config(cls, cfg, bank) -> "RelationalTerm":
        ga = cfg.gallery_aware
        return cls(bank, cfg.bank.match_views, ga.anchors, ga.relational_temperature)

    def loss(self, q: torch.Tensor, refs: BatchRefs, bank: torch.Tensor) -> torch.Tensor:
        anchors, items = self.sample(refs, bank, self.anchors)
        own = items.unsqueeze(0) == refs.indices.unsqueeze(1)
        target = (self.positives(refs, bank) @ anchors.t() / self.temperature).masked_fill(own, float("-inf"))
        student = (q @ anchors.t() / self.temperature).masked_fill(own, float("-inf"))
        log_p_g = F.log_softmax(target, dim=1)
        log_p_q = F.log_softmax(student, dim=1)
        p_g = log_p_g.exp()
        # KL(p_g || p_q); masked entries have p_g = 0 and contribute nothing
        return torch.where(own, torch.zeros_like(p_g), p_g * (log_p_g - log_p_q)).sum(1).mean()

