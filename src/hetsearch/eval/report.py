"""Evaluate saved checkpoints on the data protocol they were trained for (or an override)."""

from __future__ import annotations

from pathlib import Path

from hetsearch.data import DataConfig, Splits, make_splits
from hetsearch.eval.embed import embed
from hetsearch.eval.evaluate import evaluate_embeddings
from hetsearch.models import LoadedModel, load_checkpoint
from hetsearch.models.contract import check_pair
from hetsearch.utils.device import resolve_device
from hetsearch.utils.typed_config import apply_overrides, from_dict


def data_config_of(loaded: LoadedModel, overrides: list[str] | None = None) -> DataConfig:
    """The data config recorded in a checkpoint, with `data.key=value` overrides applied."""
    data = {"data": dict(loaded.meta.config.get("data", {}))}
    apply_overrides(data, [o if o.startswith("data.") else f"data.{o}" for o in overrides or []])
    return from_dict(DataConfig, data["data"], "data")


def evaluate_loaded(query: LoadedModel, gallery: LoadedModel, splits: Splits, device: str = "auto",
                    embedding_cache: dict | None = None) -> dict:
    """M(query, gallery) on `splits`: queries embedded by `query`, gallery by `gallery`.

    `embedding_cache` (model id, set name) -> embeddings lets a grid embed each set once per model.
    """
    warnings = check_pair(query.meta, gallery.meta)
    dev = resolve_device(device)
    cache = embedding_cache if embedding_cache is not None else {}

    def embeddings(loaded: LoadedModel, name: str, images):
        key = (loaded.meta.model_id, name)
        if key not in cache:
            cache[key] = embed(loaded.model.to(dev), images, device=dev)
        return cache[key]

    q_emb = embeddings(query, "query", splits.query.images)
    g_emb = embeddings(gallery, "gallery", splits.gallery.images)
    metrics = evaluate_embeddings(q_emb, splits.query.labels.numpy(), g_emb, splits.gallery.labels.numpy(),
                                  exclude_self=splits.exclude_self)
    return {"query_model": query.meta.model_id, "gallery_model": gallery.meta.model_id,
            "query_mflops": query.meta.flops / 1e6, "gallery_mflops": gallery.meta.flops / 1e6,
            "metrics": metrics, "warnings": warnings, "protocol": splits.protocol}


def evaluate_checkpoints(query_path: str | Path, gallery_path: str | Path, data_overrides: list[str] | None = None,
                         device: str = "auto") -> dict:
    gallery = load_checkpoint(gallery_path)
    query = gallery if Path(query_path).resolve() == Path(gallery_path).resolve() else load_checkpoint(query_path)
    splits = make_splits(data_config_of(gallery, data_overrides))
    return evaluate_loaded(query, gallery, splits, device=device)
