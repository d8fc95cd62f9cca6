"""Per-epoch validation of the model being trained (rank 0; `runtime.eval_every`).

- homogeneous retrieval on the validation split (each item queries the others): `val_recall_at_1`,
  `val_map_at_r`;
- with `compat.gallery_model`, M(q, g): each item's query embedding searches the gallery model's
  embeddings of the validation items (`hetsearch.compat.validation`): `val_hetero_*`, and the
  label-free `val_instance_recall_at_1`. The gallery side is embedded once, on first use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hetsearch.compat.validation import gallery_val_embeddings, hetero_val_metrics
from hetsearch.data import ImageSet
from hetsearch.data.splits import scorable
from hetsearch.eval.embed import embed
from hetsearch.eval.metrics import retrieval_metrics


class EpochValidator:
    def __init__(self, val: ImageSet, compat_cfg, device: torch.device, *, announce: bool = True):
        self.val, self.compat_cfg, self.device, self.announce = val, compat_cfg, device, announce
        self.gallery_embeddings: np.ndarray | None = None  # φ_g of the validation images, once computed
        self._warned_no_gallery = False

    def __call__(self, model) -> dict:
        """Homogeneous retrieval on the validation split (each item queries the others), and M(q, g)."""
        val = self.val
        if len(val) < 2 or not scorable(val.labels):  # no class with two images: nothing to retrieve
            return {}
        emb = embed(model, val.images, device=self.device)
        metrics = retrieval_metrics(emb, val.labels.numpy(), emb, val.labels.numpy(), ks=(1,), exclude_self=True)
        out = {"val_recall_at_1": metrics["recall_at_1"], "val_map_at_r": metrics["map_at_r"]}
        out.update(self.against_gallery(emb))
        return out

    def against_gallery(self, query_emb: np.ndarray) -> dict:
        """M(q, g) on the validation split: each item's query embedding searches the gallery model's
        embeddings of the other validation items (labels: Recall@1; label-free: whether the nearest
        gallery embedding of *all* validation items is the item's own). Needs compat.gallery_model."""
        cfg = self.compat_cfg
        if not cfg.gallery_model:
            return {}
        if cfg.method == "none" and not Path(cfg.gallery_model).is_file():
            # an independent model only monitors M(q, g): a missing gallery is no reason to stop
            if not self._warned_no_gallery and self.announce:
                print(f"warning: compat.gallery_model={cfg.gallery_model} does not exist: "
                      "no per-epoch M(q, g) for this independent model", flush=True)
            self._warned_no_gallery = True
            return {}
        if self.gallery_embeddings is None:
            self.gallery_embeddings = gallery_val_embeddings(cfg.gallery_model, self.val, query_emb.shape[1],
                                                             self.device)
        return hetero_val_metrics(query_emb, self.gallery_embeddings, self.val.labels.numpy())
