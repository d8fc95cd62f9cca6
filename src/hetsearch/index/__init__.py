"""Gallery index: embeddings of the gallery model in FAISS, metadata in SQLite, a manifest with
the model contract; atomic, crash-safe writes.

Modules: `gallery` (reading: `GalleryIndex`, `open_index`, `read_stored`, `load_vectors`),
`writer` (build, add, remove, rebuild), `manifest`, `store` (the data files), `storage` (atomic
writes and locks), `check` (file checks), `contract` (which query models may search an index),
`faiss_index`, `items` and `images` (gallery items and image decoding), `verify`, `folders`
(labelled folders and indexes as evaluation data)."""

from hetsearch.index.check import IndexOpenError
from hetsearch.index.contract import check_query_model
from hetsearch.index.faiss_index import DEFAULT_PARAMS, INDEX_TYPES
from hetsearch.index.gallery import GalleryIndex, Hit, StoredGallery, load_vectors, open_index, read_stored
from hetsearch.index.items import GalleryItems, csv_items, dataset_items, folder_items
from hetsearch.index.manifest import read_manifest
from hetsearch.index.storage import IndexWriteError
from hetsearch.index.writer import add_items, build_index, embed_images, rebuild_index, remove_items

__all__ = ["DEFAULT_PARAMS", "INDEX_TYPES", "GalleryIndex", "GalleryItems", "Hit", "IndexOpenError",
           "IndexWriteError", "StoredGallery", "add_items", "build_index", "check_query_model", "csv_items",
           "dataset_items", "embed_images", "folder_items", "load_vectors", "open_index", "read_manifest",
           "read_stored", "rebuild_index", "remove_items"]
