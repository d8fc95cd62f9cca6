"""`hetsearch evaluate --queries DIR (--gallery DIR | --index DIR)`: M(query model, gallery model)
on your own labelled images.

A use case on top of the index and the export runtime (a query model may be an exported
``.onnx`` / TorchScript file), so it sits above both; the metrics themselves are
`hetsearch.eval.evaluate_pair` / `evaluate_embeddings`, and the folders are read by
`hetsearch.index.folders`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hetsearch.eval import evaluate_embeddings, evaluate_pair
from hetsearch.export.runtime import load_query_encoder
from hetsearch.index.folders import decode_spec_of, read_labelled_folders, same_folder
from hetsearch.index.gallery import open_index, read_stored
from hetsearch.models import load_checkpoint
from hetsearch.models.contract import check_pair
from hetsearch.utils.device import resolve_device

__all__ = ["evaluate_folders", "evaluate_index"]


def evaluate_folders(query_model: str | Path, gallery_model: str | Path, queries: str | Path, gallery: str | Path,
                     device: str = "auto") -> dict:
    """M(query model, gallery model) with queries from a labelled folder ``queries/CLASS/*`` and the
    gallery from ``gallery/CLASS/*`` embedded by the gallery model. Labels match by class name; the
    same folder on both sides excludes each query from its own results."""
    g = load_checkpoint(gallery_model)
    q = g if same_folder(query_model, gallery_model) else load_checkpoint(query_model)
    warnings = check_pair(q.meta, g.meta)
    exclude_self = same_folder(queries, gallery)
    q_spec, g_spec = decode_spec_of(q.meta), decode_spec_of(g.meta)
    if exclude_self and q_spec == g_spec:
        q_set = g_set = read_labelled_folders([queries], q_spec)[0]
    else:
        q_set, g_set = read_labelled_folders([queries, gallery], [q_spec, g_spec])
    dev = resolve_device(device)
    metrics = evaluate_pair(q.model.to(dev), g.model.to(dev), q_set.images, q_set.labels.numpy(), g_set.images,
                            g_set.labels.numpy(), exclude_self=exclude_self, device=dev)
    protocol = {"queries": str(queries), "gallery": str(gallery), "exclude_self": exclude_self,
                "query_classes": len(q_set.class_counts()), "gallery_classes": len(g_set.class_counts()),
                "counts": {"query": len(q_set), "gallery": len(g_set)}}
    return {"query_model": q.meta.model_id, "gallery_model": g.meta.model_id,
            "query_mflops": (q.meta.flops or 0) / 1e6, "gallery_mflops": (g.meta.flops or 0) / 1e6,
            "metrics": metrics, "warnings": warnings, "protocol": protocol}


def evaluate_index(query_model: str | Path, index: str | Path, queries: str | Path, *, runtime: str = "auto",
                   allow_incompatible: bool = False) -> dict:
    """M(query model, the index's gallery model) with queries from ``queries/CLASS/*`` against the
    embeddings an index stores (nothing is re-embedded; the model contract is checked as for
    `hetsearch query`). Gallery labels are the items' labels; unlabelled items are never relevant."""
    encoder = load_query_encoder(query_model, runtime=runtime)
    opened = open_index(index, query_meta=encoder.meta, allow_incompatible=allow_incompatible)
    try:
        gallery_id = opened.gallery_model_id
        warnings = list(opened.warnings)
    finally:
        opened.close()
    stored = read_stored(index)
    q_set, = read_labelled_folders([queries], encoder.preprocessing.decode_spec())
    names = {name: i for i, name in enumerate(q_set.classes)}  # gallery-only labels get new ids
    g_labels = np.array([names.setdefault(lab, len(names)) if lab is not None else -1 for lab in stored.labels],
                        dtype=np.int64)
    q_emb = np.concatenate([encoder.embed(q_set.images[i:i + 256].numpy()) for i in range(0, len(q_set), 256)])
    metrics = evaluate_embeddings(q_emb, q_set.labels.numpy(), stored.vectors, g_labels)
    protocol = {"queries": str(queries), "index": str(index), "exclude_self": False,
                "gallery_items_without_label": int((g_labels < 0).sum()),
                "counts": {"query": len(q_set), "gallery": int(len(stored.vectors))}}
    return {"query_model": encoder.meta.model_id, "gallery_model": gallery_id,
            "query_mflops": (encoder.meta.flops or 0) / 1e6, "metrics": metrics, "warnings": warnings,
            "protocol": protocol}
