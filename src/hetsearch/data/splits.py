"""`make_splits`: train / val / query / gallery sets for the closed- or open-set protocol.

Closed set: training and test share all classes. Fashion-MNIST uses its official train/test
split; user data gets a stratified, seeded ``test_fraction`` split.
Open set: the classes are split (seeded) into disjoint training and test classes; train/val
hold only training classes, query/gallery only test classes. Fashion-MNIST takes the training
classes from its official train split and the test classes from its official test split (so no
test image is ever trained on, and the train-split images of test classes are unused); user data
uses all images of each class group.

Always: val is a stratified seeded ``val_fraction`` of the training split (never of the test
split); query = test split; gallery = the whole training split, val items included ("train") or the test split itself
("test_rest": each query is then excluded from its own results, ``exclude_self=True``).
Labels keep indexing the full class list so training and query labels are comparable.
Separate random streams (derived from ``seed``) drive the class split, the item caps and the
val/test splits, so e.g. changing ``val_fraction`` does not change which classes are held out.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from hetsearch.data.config import DataConfig
from hetsearch.data.imageset import ImageSet
from hetsearch.data.sources import load_source
from hetsearch.errors import ConfigError, DataError


@dataclass
class Splits:
    """The four sets of a run and how they were made.

    Attributes:
        train, val, query, gallery: ImageSets whose labels index into ``classes``.
        classes: the full class list of the source; ``num_classes`` is its length.
        train_classes / test_classes: class indices present in training / in query+gallery
            (equal in the closed set, disjoint in the open set).
        exclude_self: True when gallery and query are the same set (``test_rest``): the
            evaluator must drop each query from its own results.
        protocol: JSON-ready, human-readable description (what query and gallery are, counts).
        skipped: unreadable files skipped while loading (``on_bad_image: skip``).
    """

    train: ImageSet
    val: ImageSet
    query: ImageSet
    gallery: ImageSet
    classes: list[str]
    train_classes: list[int]
    test_classes: list[int]
    exclude_self: bool
    protocol: dict[str, Any]
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _generator(seed: int, purpose: str) -> torch.Generator:
    """An independent, reproducible stream per purpose."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(purpose.encode())) % (2**63))


def stratified_split(
    labels: torch.Tensor, take: float | int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split item indices into (rest, taken), with ``taken`` stratified by label.

    ``take`` is a fraction of all items (float) or an item count (int). Per-class counts are
    proportional, rounded by largest remainder so the total is exact. Both index tensors are
    sorted ascending.
    """
    labels = labels.cpu()
    n = int(labels.shape[0])
    total = round(take * n) if isinstance(take, float) else int(take)
    total = max(0, min(n, total))
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    present = torch.unique(labels)
    counts = torch.stack([(labels == c).sum() for c in present]).double()
    exact = counts * total / n
    quota = exact.floor().long()
    remainder = total - int(quota.sum())
    if remainder > 0:
        # Largest remainders first; ties broken at random (seeded) rather than by class order.
        jitter = torch.rand(len(present), generator=generator, dtype=torch.float64) * 1e-9
        order = torch.argsort(exact - quota.double() + jitter, descending=True)
        quota[order[:remainder]] += 1
    taken: list[torch.Tensor] = []
    for cls, k in zip(present.tolist(), quota.tolist()):
        members = (labels == cls).nonzero().flatten()
        perm = torch.randperm(len(members), generator=generator)
        taken.append(members[perm[:k]])
    taken_idx = torch.sort(torch.cat(taken)).values
    mask = torch.ones(n, dtype=torch.bool)
    mask[taken_idx] = False
    return mask.nonzero().flatten(), taken_idx


def split_classes(num_classes: int, train_fraction: float, generator: torch.Generator) -> tuple[list[int], list[int]]:
    """Disjoint (train, test) class index lists, each sorted; both get at least one class."""
    if num_classes < 2:
        raise DataError(f"the open-set protocol needs at least 2 classes, the data has {num_classes}")
    n_train = min(num_classes - 1, max(1, round(train_fraction * num_classes)))
    perm = torch.randperm(num_classes, generator=generator).tolist()
    return sorted(perm[:n_train]), sorted(perm[n_train:])


def _restrict(ims: ImageSet, classes: list[int]) -> ImageSet:
    return ims.subset(torch.isin(ims.labels.cpu(), torch.tensor(classes, dtype=torch.int64)))


def _cap(ims: ImageSet, limit: Optional[int], generator: torch.Generator) -> ImageSet:
    if limit is None or limit >= len(ims):
        return ims
    _, keep = stratified_split(ims.labels, int(limit), generator)
    return ims.subset(keep)


def make_splits(cfg: DataConfig) -> Splits:
    """Load the configured source and build train / val / query / gallery (see module doc)."""
    cfg.validate()
    raw = load_source(cfg)
    skipped = [path for ims in raw.values() for path in ims.skipped]
    any_set = next(iter(raw.values()))
    classes = list(any_set.classes)
    num_classes = len(classes)
    official = "train" in raw

    # 1) Class groups.
    if cfg.protocol == "open_set":
        train_classes, test_classes = split_classes(
            num_classes, float(cfg.open_set_train_fraction), _generator(cfg.seed, "open_set_classes")
        )
    else:
        train_classes = test_classes = list(range(num_classes))

    # 2) Training pool and test split.
    if official:
        train_pool, test_pool = raw["train"], raw["test"]
        if cfg.protocol == "open_set":
            train_pool, test_pool = _restrict(train_pool, train_classes), _restrict(test_pool, test_classes)
        test_desc = "official test split"
    else:
        everything = raw["all"]
        if cfg.protocol == "open_set":
            train_pool, test_pool = _restrict(everything, train_classes), _restrict(everything, test_classes)
            test_desc = "all items of the test classes"
        else:
            rest, held = stratified_split(everything.labels, float(cfg.test_fraction), _generator(cfg.seed, "test"))
            train_pool, test_pool = everything.subset(rest), everything.subset(held)
            test_desc = f"stratified {cfg.test_fraction:g} of all items"

    # 3) Optional caps for quick runs (stratified, seeded), then the validation split.
    train_pool = _cap(train_pool, cfg.max_train_items, _generator(cfg.seed, "max_train_items"))
    test_pool = _cap(test_pool, cfg.max_test_items, _generator(cfg.seed, "max_test_items"))
    if len(train_pool) == 0 or len(test_pool) == 0:
        raise DataError(
            f"data: empty split (train {len(train_pool)} items, test {len(test_pool)} items); "
            "the data set is too small for this protocol"
        )
    train_idx, val_idx = stratified_split(train_pool.labels, float(cfg.val_fraction), _generator(cfg.seed, "val"))
    train, val = train_pool.subset(train_idx), train_pool.subset(val_idx)
    if len(train) == 0:
        raise DataError(f"data: no training items left after the validation split (data.val_fraction={cfg.val_fraction})")

    # 4) Query and gallery.
    gallery_mode = cfg.resolved_gallery()
    if gallery_mode == "train" and cfg.protocol == "open_set":  # validate() already rejects this
        raise ConfigError("data.gallery: 'train' is invalid with the open-set protocol")
    query = test_pool
    # The gallery is the whole training split: validation items are held out from fitting only,
    # and an index of "the training images" should hold all of them.
    gallery = train_pool if gallery_mode == "train" else test_pool
    exclude_self = gallery_mode == "test_rest"

    names = lambda idx: [classes[i] for i in idx]  # noqa: E731
    protocol: dict[str, Any] = {
        "protocol": cfg.protocol,
        "source": cfg.source,
        "seed": cfg.seed,
        "num_classes": num_classes,
        "train_classes": names(train_classes),
        "test_classes": names(test_classes),
        "train": f"training split minus validation ({len(train)} items, {len(train_classes)} classes)",
        "val": f"stratified {cfg.val_fraction:g} of the training split ({len(val)} items)",
        "query": f"test split: {test_desc} ({len(query)} items, {len(test_classes)} classes)",
        "gallery": (
            f"whole training split, validation items included ({len(gallery)} items)"
            if gallery_mode == "train"
            else f"the test split itself ({len(gallery)} items); each query is excluded from its own results"
        ),
        "gallery_mode": gallery_mode,
        "gallery_requested": cfg.gallery,
        "exclude_self": exclude_self,
        "counts": {"train": len(train), "val": len(val), "query": len(query), "gallery": len(gallery)},
        "skipped_images": len(skipped),
    }
    if cfg.max_train_items is not None or cfg.max_test_items is not None:
        protocol["caps"] = {"max_train_items": cfg.max_train_items, "max_test_items": cfg.max_test_items}
    return Splits(
        train=train,
        val=val,
        query=query,
        gallery=gallery,
        classes=classes,
        train_classes=list(train_classes),
        test_classes=list(test_classes),
        exclude_self=exclude_self,
        protocol=protocol,
        skipped=skipped,
    )
