"""Heterogeneous validation during training: M(q, g) on the validation split, every epoch.

The gallery model embeds the validation images once (they are held out from the bank, which
holds training images only); each epoch the query model's validation embeddings search them.
- `val_hetero_recall_at_1` / `val_hetero_map_at_r`: labelled Recall@1 / MAP@R, each item
  excluded from its own results (the same protocol as the homogeneous `val_recall_at_1`);
- `val_instance_recall_at_1`: label-free, the fraction of validation items whose query embedding
  finds the gallery embedding of the *same image* first among all validation items. It is the
  metric to watch when training from unlabelled images (one class: Recall@1 is trivially 1).
"""

from __future__ import annotations

import numpy as np
import torch

from hetsearch.compat.gallery import FrozenGallery
from hetsearch.eval.embed import embed
from hetsearch.eval.metrics import retrieval_metrics


def gallery_val_embeddings(gallery_model: str, val_set, dim: int, device) -> np.ndarray | None:
    """φ_g of the validation images (None when the gallery embeds into another width)."""
    gallery = FrozenGallery.load(gallery_model)
    if int(gallery.meta.spec.embedding_dim) != int(dim):
        return None
    return embed(gallery.model, val_set.images, device=device)


def hetero_val_metrics(query_emb: np.ndarray, gallery_emb: np.ndarray | None, labels: np.ndarray) -> dict:
    if gallery_emb is None:
        return {}
    metrics = retrieval_metrics(query_emb, labels, gallery_emb, labels, ks=(1,), exclude_self=True)
    instance = float((_nearest(query_emb, gallery_emb) == np.arange(len(query_emb))).mean())
    return {"val_hetero_recall_at_1": metrics["recall_at_1"], "val_hetero_map_at_r": metrics["map_at_r"],
            "val_instance_recall_at_1": instance}


def _nearest(query: np.ndarray, gallery: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Index of each query's most similar gallery row (inner product)."""
    g = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32))
    out = []
    for start in range(0, len(query), chunk):
        q = torch.from_numpy(np.ascontiguousarray(query[start:start + chunk], dtype=np.float32))
        out.append((q @ g.t()).argmax(1))
    return torch.cat(out).numpy()
