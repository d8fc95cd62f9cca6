"""Data layer: registered data sets (Fashion-MNIST, CIFAR-10, image folders, CSV), split per protocol, held in
memory or streamed from disk, fed as (augmented) batches to training.

Images are uint8 tensors (N, C, H, W); see docs/architecture.md.

Training augmentation (`hetsearch.data.augment`) is not imported here: the index and the server
import `hetsearch.data.*` modules and must not load training code (docs/architecture.md, "Layers").
Import `BatchAugment` from `hetsearch.data.augment`.

The built-in data sets (`fashion_mnist`, `cifar10`, `files`: image folders and CSV) register here, when the
package is imported (as models register their backbones); the registry imports nothing.
"""

from hetsearch.data.batching import count_batches, iterate_batches
from hetsearch.data.config import DataConfig
from hetsearch.data.fashion_mnist import FASHION_MNIST_CLASSES
from hetsearch.data.fileset import DecodeSpec, FileSet
from hetsearch.data.imageset import ImageSet
from hetsearch.data.registry import DATASETS, DatasetSource, RawData, get_dataset, list_datasets, register_dataset
from hetsearch.data.sources import load_raw, load_source
from hetsearch.data.splits import Splits, make_splits, stratified_split
from hetsearch.data import cifar10, fashion_mnist, files  # noqa: E402,F401  (register the built-in data sets)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "DATASETS",
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
