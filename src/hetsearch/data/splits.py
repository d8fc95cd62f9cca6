"""`make_splits`: train / val / query / gallery sets for the closed- or open-set protocol.

Official splits (a data set that defines train/test or train/query/gallery: Fashion-MNIST, an
image folder ``ROOT/{train,test}/CLASS/*``, a CSV split column) are used as given. Data without
them (one pool) gets a stratified, seeded ``test_fraction`` split (closed set) or a seeded split
of its classes (open set).

Protocol ``auto`` (default): the data decides. One pool or official test classes that are all
training classes: closed set. Official test classes not all among the training classes (new
identities at test time): open set, splits as given. An explicit ``open_set`` on official splits
that share classes splits the classes (seeded): training classes from the train split, test
classes from the test split, so no test image is ever trained on. An explicit ``closed_set`` on
official splits with unseen test classes is an error.

Always: val is the official val split, or a stratified seeded ``val_fraction`` of the training
split (never of the test split), or, in the open set with ``val_classes``, every image of some
training classes held out of training (class-disjoint validation: no class shared with training
or test); query = test (or query) split; gallery = the official gallery
split, the whole training split, val items included ("train"), or the test split itself
("test_rest": each query is then excluded from its own results, ``exclude_self=True``).

A validation split in which no class has two images cannot be scored (retrieval needs a relevant
item): validation is then skipped with a warning naming ``data.val_fraction``, and a carved-out
split is given back to training.

Storage (``data.storage``): "memory" decodes every set into one uint8 tensor; "stream" leaves
the training split on disk as a FileSet, decoded and augmented on the fly by DataLoader workers
(`hetsearch.data.loader`); "auto" streams when the decoded sets would exceed ``stream_above_gb``.
Labels keep indexing the full class list so training and query labels are comparable.
Separate random streams (derived from ``seed``) drive the class split, the item caps and the
val/test splits, so e.g. changing ``val_fraction`` does not change which classes are held out.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from hetsearch.data.config import DataConfig
from hetsearch.data.fileset import FileSet
from hetsearch.data.imageset import ImageSet
from hetsearch.data.registry import RawData, get_dataset
from hetsearch.data.sources import load_raw, materialize
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

    train: ImageSet | FileSet   # a FileSet when streamed (data.storage)
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


def _restrict(ims, classes: list[int]):
    return ims.subset(torch.isin(ims.labels.cpu(), torch.tensor(classes, dtype=torch.int64)))


def _cap(ims, limit: Optional[int], generator: torch.Generator):
    if limit is None or limit >= len(ims):
        return ims
    _, keep = stratified_split(ims.labels, int(limit), generator)
    return ims.subset(keep)


def say(message: str) -> None:
    """One line about the data, on stderr (what was found, what was decided)."""
    print(f"data: {message}", file=sys.stderr, flush=True)


def scorable(labels: torch.Tensor) -> bool:
    """True when some class has two items, so retrieval among the items can be scored."""
    labels = labels.cpu()
    labels = labels[labels >= 0]
    return bool(labels.numel()) and int(torch.bincount(labels).max()) >= 2


def _present(*sets) -> set[int]:
    return {c for ims in sets if ims is not None for c in torch.unique(ims.labels.cpu()).tolist() if c >= 0}


def _storage(cfg: DataConfig, raw: RawData, pools: list) -> str:
    if get_dataset(cfg.source).in_memory_only or not any(isinstance(p, FileSet) for p in pools):
        return "memory"
    if cfg.storage != "auto":
        return cfg.storage
    total = sum(p.nbytes for p in pools if isinstance(p, FileSet))
    return "stream" if total > float(cfg.stream_above_gb) * 1e9 else "memory"


def _unlabelled_splits(cfg: DataConfig, raw: RawData) -> Splits:
    """Unlabelled images (``ROOT/*``): everything is training data for label-free training; there
    are no classes, so no validation, query or gallery split (score with ``evaluate --queries``)."""
    pool = _cap(raw.splits["all"], cfg.max_train_items, _generator(cfg.seed, "max_train_items"))
    storage = _storage(cfg, raw, [pool])
    train = materialize(pool, cfg, f"{raw.root} [all]") if storage == "memory" else pool
    empty = materialize(pool.subset(slice(0, 0)), cfg) if isinstance(pool, FileSet) else pool.subset(slice(0, 0))
    protocol = {"protocol": "unlabelled", "protocol_requested": cfg.protocol, "source": cfg.source, "root": raw.root,
                "layout": raw.layout, "official_splits": False, "seed": cfg.seed, "num_classes": 0,
                "train": f"all {len(train)} unlabelled images", "val": "none (no labels)", "query": "none",
                "gallery": "none", "storage": storage, "exclude_self": False,
                "counts": {"train": len(train), "val": 0, "query": 0, "gallery": 0},
                "skipped_images": len(getattr(train, "skipped", []))}
    say(f"{cfg.source} {raw.root}: layout {raw.layout}: {len(train)} unlabelled images, for label-free training "
        f"only; {'streamed from disk' if storage == 'stream' else 'in memory'}")
    return Splits(train=train, val=empty, query=empty, gallery=empty, classes=[], train_classes=[], test_classes=[],
                  exclude_self=False, protocol=protocol, skipped=list(getattr(train, "skipped", [])))


@dataclass
class _Pools:
    """The labelled pools of a run before its validation split, and the protocol decided for them
    (train / test / gallery / official val pools: ImageSets, or FileSets until decoded)."""

    protocol: str
    train_classes: list[int]
    test_classes: list[int]
    train: Any
    test: Any
    gallery: Any = None
    val: Any = None
    test_desc: str = ""
    note: str = ""
    val_classes: list[int] = field(default_factory=list)  # data.val_classes: training classes held out

    def present(self) -> list:
        return [p for p in (self.train, self.test, self.gallery, self.val) if p is not None]


def _pools_from_one_pool(cfg: DataConfig, raw: RawData, num_classes: int) -> _Pools:
    """Data without official splits: a seeded split of the classes (open set) or a stratified
    ``test_fraction`` of the items (closed set)."""
    everything = raw.splits["all"]
    protocol = "closed_set" if cfg.protocol == "auto" else cfg.protocol
    if protocol == "open_set":
        train_classes, test_classes = split_classes(
            num_classes, float(cfg.open_set_train_fraction), _generator(cfg.seed, "open_set_classes"))
        return _Pools(protocol, train_classes, test_classes, _restrict(everything, train_classes),
                      _restrict(everything, test_classes), val=raw.splits.get("val"),
                      test_desc="all items of the test classes")
    classes = list(range(num_classes))
    rest, held = stratified_split(everything.labels, float(cfg.test_fraction), _generator(cfg.seed, "test"))
    return _Pools(protocol, classes, classes, everything.subset(rest), everything.subset(held),
                  val=raw.splits.get("val"), test_desc=f"stratified {cfg.test_fraction:g} of all items")


def _official_protocol(cfg: DataConfig, raw: RawData, seen: set[int], tested: set[int]) -> str:
    """closed_set or open_set for official splits: ``auto`` decides by whether every test class
    is a training class; an explicit closed set with unseen test classes is an error."""
    unseen = sorted(tested - seen)
    if cfg.protocol == "closed_set" and unseen:
        raise ConfigError(
            f"data.protocol: 'closed_set', but {len(unseen)} of the {len(tested)} test classes of {raw.root} "
            f"never occur in its training split (e.g. {list(raw.classes)[unseen[0]]!r}); use data.protocol=open_set "
            "(or auto) to score new classes")
    return ("closed_set" if not unseen else "open_set") if cfg.protocol == "auto" else cfg.protocol


def _pools_from_official_splits(cfg: DataConfig, raw: RawData, num_classes: int) -> _Pools:
    """Official splits, used as given; an explicit open set on shared classes splits the classes
    (training classes from the train split, test classes from the test split)."""
    parts = raw.splits
    test_name = "test" if "test" in parts else "query"
    pools = _Pools("", [], [], parts["train"], parts[test_name], gallery=parts.get("gallery"), val=parts.get("val"),
                   test_desc=f"official {test_name} split")
    seen, tested = _present(pools.train), _present(pools.test, pools.gallery)
    pools.protocol = _official_protocol(cfg, raw, seen, tested)
    if pools.protocol == "open_set" and cfg.protocol == "open_set" and seen & tested:
        pools.train_classes, pools.test_classes = split_classes(
            num_classes, float(cfg.open_set_train_fraction), _generator(cfg.seed, "open_set_classes"))
        pools.train, pools.test = _restrict(pools.train, pools.train_classes), _restrict(pools.test, pools.test_classes)
        pools.gallery = _restrict(pools.gallery, pools.test_classes) if pools.gallery is not None else None
        pools.val = _restrict(pools.val, pools.train_classes) if pools.val is not None else None
        pools.note = "classes split into disjoint training and test classes"
        if cfg.gallery == "catalogue" and pools.gallery is None:  # the test classes' own training images
            pools.gallery = _restrict(parts["train"], pools.test_classes)
            pools.test_desc = "official test split of the test classes; gallery: their official training images"
        return pools
    pools.train_classes, pools.test_classes = sorted(seen), sorted(tested)
    unseen, shared = len(tested - seen), len(set(pools.train_classes) & set(pools.test_classes))
    pools.note = ("test classes are training classes" if pools.protocol == "closed_set" else
                  f"{unseen} of {len(pools.test_classes)} test classes are new (not in training)"
                  + (f", {shared} seen in training" if shared else ""))
    return pools


def _catalogue_pools(cfg: DataConfig, pools: _Pools) -> None:
    """``data.gallery=catalogue``: the new classes' catalogue becomes the gallery, their never-seen
    images the queries. Without their own training images (one pool, or official splits whose test
    classes are new) a seeded stratified ``test_fraction`` of the test items are the queries."""
    if cfg.gallery != "catalogue":
        return
    if pools.protocol != "open_set":
        raise ConfigError("data.gallery: 'catalogue' needs new classes at test time, but the data gives the "
                          f"{pools.protocol} protocol; use data.protocol=open_set")
    if pools.gallery is not None and not pools.test_desc.endswith("their official training images"):
        raise ConfigError("data.gallery: 'catalogue', but the data set has an official gallery split; use "
                          "data.gallery=auto to search it")
    if pools.gallery is None:
        rest, held = stratified_split(pools.test.labels, float(cfg.test_fraction), _generator(cfg.seed, "catalogue"))
        pools.test, pools.gallery = pools.test.subset(held), pools.test.subset(rest)
        pools.test_desc = f"stratified {cfg.test_fraction:g} of the test classes' items; gallery: the rest"


def _cap_pools(cfg: DataConfig, pools: _Pools) -> None:
    """Optional caps for quick runs (stratified, seeded); an empty train or test pool is an error."""
    pools.train = _cap(pools.train, cfg.max_train_items, _generator(cfg.seed, "max_train_items"))
    pools.test = _cap(pools.test, cfg.max_test_items, _generator(cfg.seed, "max_test_items"))
    if pools.gallery is not None:
        pools.gallery = _cap(pools.gallery, cfg.max_test_items, _generator(cfg.seed, "max_gallery_items"))
    if len(pools.train) == 0 or len(pools.test) == 0:
        raise DataError(
            f"data: empty split (train {len(pools.train)} items, test {len(pools.test)} items); "
            "the data set is too small for this protocol"
        )


def _decode_pools(cfg: DataConfig, raw: RawData, pools: _Pools) -> tuple[str, list[str]]:
    """Memory or stream (the training pool only); decode what is held in memory. Returns the
    storage mode and the unreadable files skipped."""
    storage = _storage(cfg, raw, pools.present())
    where = raw.root
    if storage == "memory":
        pools.train = materialize(pools.train, cfg, f"{where} [train]")
    pools.test = materialize(pools.test, cfg, f"{where} [{'test' if pools.gallery is None else 'query'}]")
    if pools.gallery is not None:
        pools.gallery = materialize(pools.gallery, cfg, f"{where} [gallery]")
    if pools.val is not None:
        pools.val = materialize(pools.val, cfg, f"{where} [val]")
    skipped = [p for ims in pools.present() for p in getattr(ims, "skipped", [])]
    return storage, skipped


def _hold_out_val_classes(cfg: DataConfig, pools: _Pools) -> tuple[Any, Any, str]:
    """(train, val, description) for ``data.val_classes``: a seeded set of training classes leaves
    training, every image of them forms the validation split (class-disjoint from train and test)."""
    if pools.protocol != "open_set":
        raise ConfigError(f"data.val_classes: holds whole training classes out as validation classes, which only "
                          f"the open set allows (the data gives {pools.protocol}); use data.val_fraction")
    if pools.val is not None:
        raise ConfigError("data.val_classes: the data set has an official val split; set data.val_classes=0 to "
                          "use it, or remove it to hold out validation classes")
    count = cfg.val_class_count(len(pools.train_classes))
    perm = torch.randperm(len(pools.train_classes), generator=_generator(cfg.seed, "val_classes")).tolist()
    val_classes = sorted(pools.train_classes[i] for i in perm[:count])
    pools.train_classes = [c for c in pools.train_classes if c not in val_classes]
    pools.val_classes = val_classes
    train, val = _restrict(pools.train, pools.train_classes), _restrict(pools.train, val_classes)
    if not scorable(val.labels):
        raise DataError(f"data.val_classes: the {count} held-out validation class(es) have at most one image each, "
                        "so validation retrieval cannot be scored; hold out more classes or use data.val_fraction")
    return train, val, f"{count} held-out training classes, all their images ({len(val)} items; data.val_classes)"


def _carve_validation(cfg: DataConfig, pools: _Pools) -> tuple[Any, Any, str]:
    """(train, val, description): the official val split, ``data.val_classes`` held-out training
    classes (open set), or a stratified seeded ``val_fraction`` of the training pool."""
    if float(cfg.val_classes):
        return _hold_out_val_classes(cfg, pools)
    if pools.val is not None:
        return pools.train, pools.val, f"official val split ({len(pools.val)} items)"
    train_idx, val_idx = stratified_split(pools.train.labels, float(cfg.val_fraction), _generator(cfg.seed, "val"))
    # no validation items: the training split is the pool itself (no copy of its pixels)
    train = pools.train if len(val_idx) == 0 else pools.train.subset(train_idx)
    val = pools.train.subset(val_idx)
    return train, val, f"stratified {cfg.val_fraction:g} of the training split ({len(val)} items)"


def _validation_split(cfg: DataConfig, pools: _Pools, where: str) -> tuple[Any, ImageSet, str]:
    """(train, val, description); a validation split that cannot be scored is skipped with a
    warning (and a carved-out split given back to training)."""
    train, val, val_desc = _carve_validation(cfg, pools)
    official = pools.val is not None
    if len(val) and not scorable(val.labels):
        what = "the official val split" if official else f"data.val_fraction={cfg.val_fraction:g}"
        say(f"warning: {what} gives a validation split of {len(val)} item(s) with at most one image per class, "
            "so validation retrieval cannot be scored (a query needs another image of its class); validation is "
            "skipped" + ("" if official else " and those items are trained on")
            + ". To validate, " + ("add images to it" if official else
                                    "raise data.val_fraction (e.g. 0.3) if classes have 3+ images, or give an official "
                                    "ROOT/val/CLASS/* split with 2+ images per class")
            + "; to silence this, set data.val_fraction=0 or runtime.eval_every=0.")
        if not official:
            train = pools.train
        val = val.subset(slice(0, 0))
        val_desc = "none (validation skipped: at most one image per class)"
    if isinstance(val, FileSet):
        val = val.materialize(num_workers=0, what=f"{where} [val]")
    if len(train) == 0:
        raise DataError(f"data: no training items left after the validation split (data.val_fraction={cfg.val_fraction})")
    return train, val, val_desc


def _gallery_mode(cfg: DataConfig, pools: _Pools) -> str:
    """train, gallery_split or test_rest (``data.gallery``; auto: an official gallery split when
    there is one, else by protocol)."""
    if cfg.gallery == "catalogue":
        return "catalogue"
    if cfg.gallery == "auto":
        mode = "gallery_split" if pools.gallery is not None else cfg.resolved_gallery(pools.protocol)
    else:
        mode = cfg.gallery
    if mode == "train" and pools.protocol == "open_set":
        raise ConfigError("data.gallery: 'train' is invalid with the open-set protocol (the training classes never "
                          "occur among the queries); use 'test_rest' or 'auto'")
    return mode


def _gallery(mode: str, pools: _Pools) -> tuple[Any, str]:
    """The gallery set of `mode` and its description."""
    # The gallery is the whole training split: validation items are held out from fitting only,
    # and an index of "the training images" should hold all of them.
    if mode == "train":
        gallery = pools.train  # streamed: a FileSet, decoded only if an evaluation asks for its images
        return gallery, f"whole training split, validation items included ({len(gallery)} items)"
    if mode == "gallery_split":
        return pools.gallery, f"official gallery split ({len(pools.gallery)} items)"
    if mode == "catalogue":
        return pools.gallery, (f"catalogue: the test classes' own images, never queried ({len(pools.gallery)} "
                               "items)")
    return pools.test, f"the test split itself ({len(pools.test)} items); each query is excluded from its own results"


def _protocol_info(cfg: DataConfig, raw: RawData, pools: _Pools, sets: dict[str, Any], descriptions: dict[str, str],
                   gallery_mode: str, storage: str, skipped: list[str]) -> dict[str, Any]:
    """The JSON-ready description of the splits (`Splits.protocol`)."""
    classes = list(raw.classes)
    names = lambda idx: [classes[i] for i in idx]  # noqa: E731
    train, val, query, gallery = (sets[k] for k in ("train", "val", "query", "gallery"))
    info: dict[str, Any] = {
        "protocol": pools.protocol,
        "protocol_requested": cfg.protocol,
        "source": cfg.source,
        "root": raw.root,
        "layout": raw.layout,
        "official_splits": raw.official,
        "seed": cfg.seed,
        "num_classes": len(classes),
        "train_classes": names(pools.train_classes),
        "test_classes": names(pools.test_classes),
        "train": f"training split minus validation ({len(train)} items, {len(pools.train_classes)} classes)",
        "val": descriptions["val"],
        "query": f"test split: {pools.test_desc} ({len(query)} items, {len(pools.test_classes)} classes)",
        "gallery": descriptions["gallery"],
        "gallery_mode": gallery_mode,
        "gallery_requested": cfg.gallery,
        "exclude_self": gallery_mode == "test_rest",
        "storage": storage,
        "counts": {"train": len(train), "val": len(val), "query": len(query), "gallery": len(gallery)},
        "skipped_images": len(skipped),
    }
    if pools.note:
        info["protocol_note"] = pools.note
    if pools.val_classes:
        info["val_classes"] = names(pools.val_classes)
    if cfg.max_train_items is not None or cfg.max_test_items is not None:
        info["caps"] = {"max_train_items": cfg.max_train_items, "max_test_items": cfg.max_test_items}
    return info


def _announce(cfg: DataConfig, raw: RawData, pools: _Pools, sets: dict[str, Any], gallery_mode: str,
              storage: str) -> None:
    """One line on stderr about what was found and decided (not for the default Fashion-MNIST
    closed set, whose splits are the documented default)."""
    if raw.official or cfg.source != "fashion_mnist" or pools.protocol != "closed_set":
        say(f"{cfg.source} {raw.root}: layout {raw.layout}; {pools.protocol}"
            + (f" ({pools.note})" if pools.note else "")
            + f"; train {len(sets['train'])}, val {len(sets['val'])}, query {len(sets['query'])}, "
            + f"gallery {len(sets['gallery'])} ({gallery_mode})"
            + f"; {'streamed from disk' if storage == 'stream' else 'in memory'}")


def make_splits(cfg: DataConfig, raw: RawData | None = None) -> Splits:
    """Load the configured data set and build train / val / query / gallery (see module doc)."""
    cfg.validate()
    raw = raw if raw is not None else load_raw(cfg)
    if not raw.labelled:
        return _unlabelled_splits(cfg, raw)
    classes = list(raw.classes)
    build = _pools_from_official_splits if raw.official else _pools_from_one_pool
    pools = build(cfg, raw, len(classes))                          # 1) protocol, class groups, pools
    _catalogue_pools(cfg, pools)                                   # 1b) data.gallery=catalogue
    _cap_pools(cfg, pools)                                         # 2) caps for quick runs
    storage, skipped = _decode_pools(cfg, raw, pools)              # 3) memory or stream
    train, val, val_desc = _validation_split(cfg, pools, raw.root)  # 4) validation
    gallery_mode = _gallery_mode(cfg, pools)                       # 5) query and gallery
    gallery, gallery_desc = _gallery(gallery_mode, pools)
    sets = {"train": train, "val": val, "query": pools.test, "gallery": gallery}
    protocol = _protocol_info(cfg, raw, pools, sets, {"val": val_desc, "gallery": gallery_desc}, gallery_mode,
                              storage, skipped)
    _announce(cfg, raw, pools, sets, gallery_mode, storage)
    return Splits(train=train, val=val, query=pools.test, gallery=gallery, classes=classes,
                  train_classes=list(pools.train_classes), test_classes=list(pools.test_classes),
                  exclude_self=gallery_mode == "test_rest", protocol=protocol, skipped=skipped)
