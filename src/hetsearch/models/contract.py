"""The model contract: which query models may be searched against which gallery models.

Two rules, each defined once here and used everywhere a pair of models meets (index, server,
evaluation, training, architecture search, the compatibility grid):

- `space_mismatch`: can the query model's vectors be compared with the gallery model's at all
  (same embedding width, same input images)? A mismatch is always an error.
- `declared_compatible`: was the query model trained for this gallery model (or is it that model)?
  An undeclared pair can be compared, but its accuracy is expected to be near chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hetsearch.errors import CompatibilityError
from hetsearch.models.checkpoint import ModelMeta
from hetsearch.models.embedding_model import ModelSpec


def declared_compatible(query: ModelMeta, gallery: ModelMeta) -> bool:
    """A query model may search a gallery model's embeddings if it *is* that model or was trained
    to be compatible with it."""
    return query.model_id == gallery.model_id or query.compatible_with == gallery.model_id


@dataclass(frozen=True)
class SpaceMismatch:
    """What keeps a query model's embeddings from being compared with a gallery model's."""

    what: str  # "embedding_dim" (vector width) or "input" (channels or image size)
    query: ModelSpec
    gallery: ModelSpec

    def describe(self, query_name: str, gallery_name: str) -> str:
        """One clause naming both models, e.g. "query model A embeds into 64 dimensions but
        gallery model B into 128"."""
        q, g = self.query, self.gallery
        if self.what == "embedding_dim":
            return f"{query_name} embeds into {q.embedding_dim} dimensions but {gallery_name} into {g.embedding_dim}"
        return f"{query_name} takes {q.in_chans}x{q.image_size}px images, {gallery_name} {g.in_chans}x{g.image_size}px"

    @property
    def fix(self) -> str:
        """The query-model settings that remove the mismatch."""
        if self.what == "embedding_dim":
            return f"model.embedding_dim={self.gallery.embedding_dim}"
        return f"data.channels={self.gallery.in_chans} data.image_size={self.gallery.image_size}"


def space_mismatch(query: ModelSpec, gallery: ModelSpec) -> Optional[SpaceMismatch]:
    """None when embeddings of ``query`` can be searched among embeddings of ``gallery`` (same
    embedding dimension, same input channels and image size); otherwise what differs (the
    dimension is reported first)."""
    if query.embedding_dim != gallery.embedding_dim:
        return SpaceMismatch("embedding_dim", query, gallery)
    if (query.in_chans, query.image_size) != (gallery.in_chans, gallery.image_size):
        return SpaceMismatch("input", query, gallery)
    return None


def check_pair(query: ModelMeta, gallery: ModelMeta) -> list[str]:
    """Raise on pairs that cannot be compared at all; return warnings for undeclared pairs."""
    mismatch = space_mismatch(query.spec, gallery.spec)
    if mismatch is not None:
        clause = mismatch.describe(f"query model {query.model_id}", f"gallery model {gallery.model_id}")
        if mismatch.what == "embedding_dim":
            raise CompatibilityError(
                f"{clause}; heterogeneous search needs the same embedding dimension (train the query model "
                f"with {mismatch.fix} and compat.gallery_model=<gallery checkpoint>)")
        raise CompatibilityError(clause)
    if declared_compatible(query, gallery):
        return []
    return [f"query model {query.model_id} was not trained to be compatible with gallery model "
            f"{gallery.model_id} (it declares: {query.compatible_with or 'nothing'}); "
            "cross-model accuracy is expected to be near chance"]
