"""Compatibility terms that train the query model against the gallery embedding bank.

Shared by `contrastive`, `relational` and `bank_l2`: the bank (hetsearch.compat.bank) holds the
frozen gallery model's unit-norm embedding of view v of every training image i; the trainer feeds
the query model exactly that view (`prepare_batch`), so the query's target is bank[i, v]. No
gallery forward pass runs during training, and no label is used: with `train.task_loss: none`
a folder of unlabelled images and a gallery model are enough to train a compatible query model.

Every term sees the query embeddings (unnormalised; they are normalised here, retrieval compares
directions), the batch's item indices and view ids (`BatchRefs`), and draws its negatives /
anchors from the bank with a generator seeded per step (`step_generator`), on the bank's device.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from hetsearch.compat.bank import GalleryBank, bank_from_index, build_bank, data_fingerprint
from hetsearch.compat.base import BatchRefs, CompatibilityTerm, register_compat_method, step_generator
from hetsearch.compat.gallery import FrozenGallery, check_same_embedding_space
from hetsearch.compat.views import ItemViews
from hetsearch.errors import CompatibilityError, ConfigError

_BANKS: dict[tuple, GalleryBank] = {}


def bank_root(cfg, run_dir: Path | None) -> Path:
    """compat.bank.dir, else `<output_dir>/banks` (next to the run), else next to the gallery model."""
    if cfg.bank.dir:
        return Path(cfg.bank.dir)
    if run_dir is not None:
        return Path(run_dir).parent / "banks"
    return Path(cfg.gallery_model).parent / "banks"


def open_bank(cfg, *, model_spec, train_set, run_dir: Path | None, device, augment=None, method: str) -> GalleryBank:
    """The bank for this run (built on first use, then shared by every part of a composite)."""
    gallery = FrozenGallery.load(cfg.gallery_model)
    check_same_embedding_space(model_spec, gallery.meta, method)
    crop = getattr(augment, "crop_padding", 2) if augment is not None else 2
    hflip = getattr(augment, "hflip", True) if augment is not None else True
    views = ItemViews(seed=cfg.bank.view_seed, crop_padding=crop, hflip=hflip)
    if cfg.bank.index:
        if cfg.bank.views != 1 and cfg.bank.match_views:
            raise ConfigError(f"compat.bank.views: a gallery index holds one view per image (the image as is); "
                              f"set compat.bank.views=1 with compat.bank.index (got {cfg.bank.views})")
        cache_key = ("index", str(Path(cfg.bank.index).resolve()), gallery.model_id, data_fingerprint(train_set),
                     crop, hflip, cfg.bank.index_missing)
        if cache_key not in _BANKS:
            embed_missing = None
            if cfg.bank.index_missing == "embed":
                def embed_missing(missing_set):
                    bank = build_bank(gallery, missing_set, views=views, num_views=1, root=bank_root(cfg, run_dir),
                                      device=device, batch_size=cfg.bank.batch_size,
                                      chunk_items=cfg.bank.chunk_items)
                    return bank.array[:, 0]
            _BANKS[cache_key] = bank_from_index(cfg.bank.index, gallery.model_id, train_set, views,
                                                embed_missing=embed_missing)
        return _BANKS[cache_key]
    root = bank_root(cfg, run_dir)
    fingerprint = data_fingerprint(train_set)
    cache_key = ("built", str(root.resolve()), gallery.model_id, fingerprint, cfg.bank.views, views.seed, crop, hflip)
    if cache_key not in _BANKS:
        bank = build_bank(gallery, train_set, views=views, num_views=cfg.bank.views, root=root, device=device,
                          batch_size=cfg.bank.batch_size, chunk_items=cfg.bank.chunk_items,
                          fingerprint=fingerprint)
        _BANKS.clear()  # keep at most one bank in memory
        _BANKS[cache_key] = bank
    return _BANKS[cache_key]


class BankTerm(CompatibilityTerm):
    """Base: holds the bank; subclasses implement `loss(q_unit, refs, bank_tensor)`."""

    needs_bank = True
    salt = 0
    method_name = ""                  # set by the registered subclasses

    def __init__(self, method: str, bank: GalleryBank, match_views: bool = True, options: dict | None = None):
        super().__init__()
        self.method = method
        self.bank = bank
        self.view_source = bank
        self.match_views = bool(match_views)
        self.gallery_model_id = bank.gallery_model_id
        self.summary = {"method": method, "gallery_model_id": bank.gallery_model_id, "bank": bank.summary,
                        "match_views": self.match_views, **(options or {})}

    def forward(self, embeddings: torch.Tensor, images: torch.Tensor | None, labels: torch.Tensor | None,
                refs: BatchRefs | None = None) -> torch.Tensor:
        if refs is None:
            raise CompatibilityError(f"compat.method={self.method}: the term needs the batch's item indices "
                                     "(it is trained through hetsearch.train.Trainer, which passes them)")
        bank = self.bank.tensor(embeddings.device)
        # in float32 even under AMP: similarities near 1 divided by a small temperature need the bits
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            q = F.normalize(embeddings.float(), dim=1)
            return self.loss(q, refs, bank)

    def positives(self, refs: BatchRefs, bank: torch.Tensor) -> torch.Tensor:
        return bank[refs.indices, refs.views].float()

    def sample(self, refs: BatchRefs, bank: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` bank rows drawn uniformly (item and view): (embeddings (M, D), item indices (M,))."""
        gen = step_generator(bank.device, refs, self.salt)
        items = torch.randint(0, bank.shape[0], (count,), generator=gen, device=bank.device)
        views = torch.randint(0, bank.shape[1], (count,), generator=gen, device=bank.device)
        return bank[items, views].float(), items

    def loss(self, q: torch.Tensor, refs: BatchRefs, bank: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def build(cls, cfg, *, model_spec, classes: list[str], train_set, run_dir: Path | None, device,
              augment) -> "BankTerm":
        """Opens (or builds) the bank, then makes the term (`from_config`)."""
        bank = open_bank(cfg, model_spec=model_spec, train_set=train_set, run_dir=run_dir, device=device,
                         augment=augment, method=cls.method_name)
        return cls.from_config(cfg, bank).to(device)

    @classmethod
    def from_config(cls, cfg, bank: GalleryBank) -> "BankTerm":
        raise NotImplementedError


@register_compat_method("bank_l2")
class BankL2Term(BankTerm):
    """View-matched regression: mean ||q̂ - ĝ_{i,v}||² (= 2 - 2 cos) against the gallery embedding bank."""

    method_name = "bank_l2"

    @classmethod
    def from_config(cls, cfg, bank: GalleryBank) -> "BankL2Term":
        return cls("bank_l2", bank, cfg.bank.match_views)

    def loss(self, q: torch.Tensor, refs: BatchRefs, bank: torch.Tensor) -> torch.Tensor:
        return (q - self.positives(refs, bank)).pow(2).sum(1).mean()
