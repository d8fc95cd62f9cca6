"""Which query models may search an index: the model contract (`hetsearch.models.contract`)
applied to the gallery model an index's manifest records."""

from __future__ import annotations

from hetsearch.errors import CompatibilityError
from hetsearch.models.checkpoint import ModelMeta
from hetsearch.models.contract import check_pair


def check_query_model(manifest: dict, query: ModelMeta, *, allow_incompatible: bool = False) -> list[str]:
    """Refuse a query model not trained compatible with the index's gallery model (or being it).

    Returns warnings (non-empty only with ``allow_incompatible``)."""
    gallery = ModelMeta.from_dict(manifest["gallery_model"])
    problems = check_pair(query, gallery)  # raises when the embeddings cannot be compared at all
    if not problems:
        return []
    if allow_incompatible:
        return [f"{problems[0]}; searching anyway because of --allow-incompatible"]
    gallery_path = manifest.get("gallery_model_path") or "<gallery checkpoint>"
    raise CompatibilityError(
        f"query model {query.model_id} is not compatible with gallery model {gallery.model_id}, whose "
        f"embeddings this index holds (the query model declares compatible_with="
        f"{query.compatible_with or 'nothing'}). Fix: use a query model trained against this gallery model "
        f"(e.g. `hetsearch train configs/fashion_mnist/query_mobilenetv3_small.yaml "
        f"compat.gallery_model={gallery_path}`), or search with the gallery model itself, or rebuild the "
        "index with the gallery model this query model is compatible with. For experiments, "
        "--allow-incompatible searches anyway (expect near-chance results).")
