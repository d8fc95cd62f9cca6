"""Data layer: load Fashion-MNIST or the user's images into memory, split them per protocol,
and feed batches (with batched augmentation) to training.

Images are uint8 tensors (N, C, H, W); see docs/architecture.md.
"""

from hetsearch.data.augment import BatchAugment
from hetsearch.data.batching import count_batches, iterate_batches
from hetsearch.data.config import DataConfig
from hetsearch.data.fashion_mnist import FASHION_MNIST_CLASSES
from hetsearch.data.imageset import ImageSet
from hetsearch.data.sources import load_source
from hetsearch.data.splits import Splits, make_splits, stratified_split

__all__ = [
    "FASHION_MNIST_CLASSES",
    "BatchAugment",
    "DataConfig",
    "ImageSet",
    "Splits",
    "count_batches",
    "iterate_batches",
    "load_source",
    "make_splits",
    "stratified_split",
]
