"""Data layer: registered data sets (Fashion-MNIST, image folders, CSV), split per protocol, held in
memory or streamed from disk, fed as (augmented) batches to training.

Images are uint8 tensors (N, C, H, W); see docs/architecture.md.
"""

from hetsearch.data.augment import BatchAugment
from hetsearch.data.batching import count_batches, iterate_batches
from hetsearch.data.config import DataConfig
from hetsearch.data.fashion_mnist import FASHION_MNIST_CLASSES
from hetsearch.data.fileset import DecodeSpec, FileSet
from hetsearch.data.imageset import ImageSet
from hetsearch.data.registry import DatasetSource, RawData, get_dataset, list_datasets, register_dataset
from hetsearch.data.sources import load_raw, load_source
from hetsearch.data.splits import Splits, make_splits, stratified_split

__all__ = [
    "FASHION_MNIST_CLASSES",
    "BatchAugment",
    "DataConfig",
    "DatasetSource",
    "DecodeSpec",
    "FileSet",
    "RawData",
    "get_dataset",
    "list_datasets",
    "load_raw",
    "register_dataset",
    "ImageSet",
    "Splits",
    "count_batches",
    "iterate_batches",
    "load_source",
    "make_splits",
    "stratified_split",
]
