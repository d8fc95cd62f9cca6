"""The model contract: which query models may be searched against which gallery models."""

from __future__ import annotations

from hetsearch.errors import CompatibilityError
from hetsearch.models.checkpoint import ModelMeta


def declared_compatible(query: ModelMeta, gallery: ModelMeta) -> bool:
    """A query model may search a gallery model's embeddings if it *is* that model or was trained
    to be compatible with it."""
    return query.model_id == gallery.model_id or query.compatible_with == gallery.model_id


def check_pair(query: ModelMeta, gallery: ModelMeta) -> list[str]:
    """Raise on pairs that cannot be compared at all; return warnings for undeclared pairs."""
    if query.spec.embedding_dim != gallery.spec.embedding_dim:
        raise CompatibilityError(
            f"query model {query.model_id} embeds into {query.spec.embedding_dim} dimensions but gallery "
            f"model {gallery.model_id} into {gallery.spec.embedding_dim}; heterogeneous search needs the "
            "same embedding dimension (train the query model with model.embedding_dim="
            f"{gallery.spec.embedding_dim} and compat.gallery_model=<gallery checkpoint>)")
    if (query.spec.in_chans, query.spec.image_size) != (gallery.spec.in_chans, gallery.spec.image_size):
        raise CompatibilityError(
            f"query model {query.model_id} takes {query.spec.in_chans}x{query.spec.image_size}px images, "
            f"gallery model {gallery.model_id} {gallery.spec.in_chans}x{gallery.spec.image_size}px")
    if declared_compatible(query, gallery):
        return []
    return [f"query model {query.model_id} was not trained to be compatible with gallery model "
            f"{gallery.model_id} (it declares: {query.compatible_with or 'nothing'}); "
            "cross-model accuracy is expected to be near chance"]
