"""Your own images as evaluation data: labelled folders (``DIR/CLASS/IMAGE``) and index folders.

`read_labelled_folders` decodes labelled folders as a model sees images (`decode_spec_of`);
`folder_splits` turns a query folder and a gallery folder, or the images an index stores, into the
`Splits` the compatibility grid evaluates (`hetsearch grid --queries`). The `hetsearch evaluate
--queries` use cases are in `hetsearch.folder_eval`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hetsearch.data.files import class_sort_key, list_class_folders
from hetsearch.data.fileset import DecodeSpec, FileSet
from hetsearch.data.imageset import ImageSet
from hetsearch.data.splits import Splits
from hetsearch.data.transforms import fit_tensor_images
from hetsearch.errors import DataError
from hetsearch.index.gallery import read_stored


def decode_spec_of(meta) -> DecodeSpec:
    """How the model ``meta`` sees a user image: its `preprocessing` (input size, channels, resize mode,
    background)."""
    return meta.spec.preprocessing.decode_spec()


def same_folder(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def read_labelled_folders(folders: Sequence[str | Path], decode, num_workers: int | None = None) -> list:
    """Each ``DIR/CLASS/*`` folder as an ImageSet decoded with ``decode`` (a `DecodeSpec`, or one per
    folder); all share one class list (the union of their class folder names), so labels compare
    by name."""
    decodes = list(decode) if isinstance(decode, (list, tuple)) else [decode] * len(folders)
    listed = []
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (expected a labelled folder DIR/CLASS/IMAGE)")
        per_class = list_class_folders(folder)
        if not per_class:
            raise DataError(f"{folder}: no class sub-folders with images (expected DIR/CLASS/IMAGE)")
        listed.append(per_class)
    classes = sorted({c for per_class in listed for c, _ in per_class}, key=class_sort_key)
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for folder, per_class, spec in zip(folders, listed, decodes):
        paths = [str(p) for _, files in per_class for p in files]
        labels = torch.tensor([index[c] for c, files in per_class for _ in files], dtype=torch.int64)
        files = FileSet(paths=paths, labels=labels, classes=classes, decode=spec)
        out.append(files.materialize(num_workers=num_workers if len(files) >= 2048 else 0, what=str(folder)))
    return out


def _index_gallery(q_set: ImageSet, index: str | Path, spec: DecodeSpec) -> tuple[ImageSet, ImageSet]:
    """(the query set over the joint class list, the index's stored images as a gallery set)."""
    stored = read_stored(index)
    item_labels, ids = stored.labels, [int(i) for i in stored.ids]
    thumbnails = torch.from_numpy(np.array(stored.thumbnails))
    classes = list(q_set.classes)
    for label in item_labels:
        if label is not None and label not in classes:
            classes.append(label)
    lookup = {name: i for i, name in enumerate(classes)}
    q_set = ImageSet(images=q_set.images, labels=q_set.labels, classes=classes, sources=q_set.sources)
    g_set = ImageSet(images=fit_tensor_images(thumbnails, spec.channels, spec.image_size),
                     labels=torch.tensor([lookup[lab] if lab is not None else -1 for lab in item_labels],
                                         dtype=torch.int64),
                     classes=classes, sources=[f"{index}#{i}" for i in ids])
    return q_set, g_set


def folder_splits(meta, queries: str | Path, gallery: str | Path | None = None, index: str | Path | None = None):
    """A `Splits` whose query set is ``queries/CLASS/*`` and whose gallery is ``gallery/CLASS/*`` or
    the images an index stores (its thumbnails, as its gallery model saw them), decoded as the model
    ``meta`` (the grid's first model) sees images; train/val are empty. For `hetsearch grid`."""
    spec = decode_spec_of(meta)
    if index is None:
        exclude_self = same_folder(queries, gallery)
        sets = read_labelled_folders([queries] if exclude_self else [queries, gallery], spec)
        q_set, g_set = sets[0], sets[-1]
        where = {"queries": str(queries), "gallery": str(gallery)}
    else:
        exclude_self = False
        q_set, g_set = _index_gallery(read_labelled_folders([queries], spec)[0], index, spec)
        where = {"queries": str(queries), "index": str(index), "gallery": "the index's stored images"}
    empty = q_set.subset(slice(0, 0))
    present = sorted(set(q_set.labels.tolist()))
    protocol = {"protocol": "folders", **where, "exclude_self": exclude_self,
                "counts": {"query": len(q_set), "gallery": len(g_set)}}
    return Splits(train=empty, val=empty, query=q_set, gallery=g_set, classes=list(q_set.classes), train_classes=[],
                  test_classes=present, exclude_self=exclude_self, protocol=protocol)
