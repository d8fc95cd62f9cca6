"""Gallery index: embeddings of the gallery model in FAISS, metadata in SQLite, a manifest with
the model contract; atomic, crash-safe writes. See `hetsearch.index.gallery`."""

from hetsearch.index.faiss_index import DEFAULT_PARAMS, INDEX_TYPES
from hetsearch.index.gallery import (GalleryIndex, Hit, IndexOpenError, add_items, build_index, read_manifest,
                                     check_query_model, embed_images, load_vectors, open_index,
                                     rebuild_index, remove_items)
from hetsearch.index.items import GalleryItems, csv_items, dataset_items, folder_items
from hetsearch.index.storage import IndexWriteError

__all__ = ["DEFAULT_PARAMS", "INDEX_TYPES", "GalleryIndex", "GalleryItems", "Hit", "IndexOpenError",
           "IndexWriteError", "add_items", "build_index", "check_query_model", "csv_items", "dataset_items",
           "embed_images", "folder_items", "load_vectors", "open_index", "read_manifest", "rebuild_index", "remove_items"]
