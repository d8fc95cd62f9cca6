"""The compatibility term a trainer adds to its classification loss.

A term (`CompatibilityTerm`, an `nn.Module`) sees the query model's (unnormalised) embeddings,
the input batch and the labels, and returns a scalar loss. Methods (BCT, L2, distillation, ...)
are term classes registered by name (`METHODS`, `@register_compat_method("name")`), so the trainer
never branches on the method. Each class declares what it needs (`needs_labels`, `needs_bank`,
`needs_gallery_forward`, `same_head`: typed class attributes, read by the trainer and by the
config check before any data is read) and builds itself with `build(cfg, *, model_spec, classes,
train_set, run_dir, device, augment)`. A term may own trainable parameters and state: the
trainer's loss module (`hetsearch.train.loss`) optimises the former and checkpoints both
(`training_state`; frozen copies of the gallery side are left out).

Methods compose with "+": `compat.method: bct+l2` sums the BCT influence loss and L2 regression
onto the gallery embedding, each part weighted by `compat.term_weights` (default 1 each), all
against the same gallery model. Each built term carries a `summary` (what it was built from),
written once to `run_dir/compat.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

import torch
from torch import nn

from hetsearch.errors import ConfigError
from hetsearch.utils.io import atomic_write_json
from hetsearch.registries import METHODS, method_parts

SUMMARY_FILE = "compat.json"


class CompatibilityTerm(nn.Module):
    """Base of the compatibility terms: an `nn.Module`, so that a term may own trainable parameters
    (a learnable temperature) and state (a queue of past embeddings).

    The trainer puts the term in its loss module (`hetsearch.train.loss.TrainingLoss`): the term's
    parameters that require a gradient are handed to the optimiser, and its state (parameters and
    buffers) is saved in `checkpoint_last.pt` and restored on `--resume` (`training_state`).
    Copies of the frozen gallery side (classifier rows, the gallery model) are constants rebuilt
    from the gallery checkpoint at every start: a term names the submodules holding them in
    `frozen_submodules`, and they are left out of the training checkpoint.

    `forward(embeddings, images, labels)` returns the scalar loss; terms with `needs_bank` take
    `refs=BatchRefs(...)` as well (`apply_term`).
    """

    # What a term needs: declared by each term class, read by the trainer (`needs_labels`,
    # `needs_bank`) and by the config check that runs before any data is read (`same_head`).
    needs_labels: bool = False           # the batch's class labels (BCT: targets of the gallery classifier)
    needs_bank: bool = False             # the gallery embedding bank: forward takes refs= (item indices and
                                         # views) and the batches are the bank's stored views (`view_source`)
    needs_gallery_forward: bool = False  # a forward pass of the frozen gallery model on every training batch
    same_head: bool = False              # the query model's head (type, scale, margin) must be the gallery's
    frozen_submodules: tuple[str, ...] = ()  # children holding frozen gallery copies (not checkpointed)

    method: str = ""
    gallery_model_id: str = ""
    summary: dict = MappingProxyType({})
    view_source: Optional[Any] = None   # needs_bank: the bank whose stored views the batches are (`prepare_batch`)
    match_views: bool = True            # needs_bank: the query sees view v of image i (else the trainer's augmentation)
    last_parts = MappingProxyType({})   # composite terms: each part's unweighted value at the last call

    @classmethod
    def build(cls, cfg, *, model_spec, classes: list[str], train_set, run_dir: Optional[Path], device,
              augment) -> "CompatibilityTerm":
        """The term for ``cfg`` (a `CompatConfig`) and this run: the query model's `ModelSpec`, the
        class names, the training split, the run folder (None: no cache), the device and the
        trainer's augmentation config (`train.augment`)."""
        raise NotImplementedError(f"{cls.__name__}.build")

    @classmethod
    def needs(cls) -> list[str]:
        """The names of what the term needs, for people (`hetsearch list`)."""
        flags = {"labels": cls.needs_labels, "bank": cls.needs_bank, "gallery forward": cls.needs_gallery_forward,
                 "same head": cls.same_head}
        return [name for name, needed in flags.items() if needed]


def _frozen_prefixes(module: nn.Module) -> tuple[str, ...]:
    prefixes = []
    for name, sub in module.named_modules():
        for child in (sub.frozen_submodules if isinstance(sub, CompatibilityTerm) else ()):
            prefixes.append(f"{name}.{child}." if name else f"{child}.")
    return tuple(prefixes)


def training_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state training changes in `module` (a term, or a module holding terms): its state_dict
    without the frozen gallery copies (`CompatibilityTerm.frozen_submodules`)."""
    skip = _frozen_prefixes(module)
    return {key: value for key, value in module.state_dict().items() if not key.startswith(skip)}


def load_training_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore what `training_state` saved; ValueError naming the keys when they do not match."""
    expected = set(training_state(module))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"missing keys {missing}, unexpected keys {unexpected}")
    result = module.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # cannot happen after the check above; guards the contract
        raise ValueError(f"unexpected keys {result.unexpected_keys}")


@dataclass
class BatchRefs:
    """Which training items (and which of their views) a batch holds, for terms that look them up
    in the gallery embedding bank. `seed` seeds the step's own random draws (negatives, anchors),
    so a resumed run draws what an uninterrupted one would."""

    indices: torch.Tensor            # int64 (B,): positions in the training split
    views: torch.Tensor              # int64 (B,): view of each item (0 = the image as is)
    seed: int = 0


def view_source(term: Optional[CompatibilityTerm]) -> object | None:
    """The bank whose views a term's batches must be made of (`None`: the trainer's augmentation)."""
    return term.view_source if term is not None and term.needs_bank else None


def prepare_batch(term: Optional[CompatibilityTerm], images_uint8: torch.Tensor, indices: torch.Tensor, augment,
                  generator: torch.Generator, seed: int) -> tuple[torch.Tensor, BatchRefs | None]:
    """The uint8 batch the model sees, and the refs a bank term needs.

    Terms without a bank: the trainer's random augmentation, unchanged (same random stream).
    Bank terms with matched views: a uniformly drawn stored view of each image, so that the
    query's positive is exactly bank[i, v]. Bank terms with `match_views: false`: the trainer's
    augmentation, target view 0 (the image as is)."""
    source = view_source(term)
    if source is None:
        return augment(images_uint8, generator), None
    if not term.match_views:
        views = torch.zeros_like(indices)
        return augment(images_uint8, generator), BatchRefs(indices, views, seed)
    draw = _device_generator(images_uint8.device, seed)
    x, views = source.sample_views(images_uint8, indices, draw)
    return x, BatchRefs(indices, views, seed)


_GENERATORS: dict[str, torch.Generator] = {}


def _device_generator(device: torch.device, seed: int) -> torch.Generator:
    """One reusable generator per device, reseeded per step (no host-device transfer per draw)."""
    name = str(device)
    if name not in _GENERATORS:
        _GENERATORS[name] = torch.Generator(device=device)
    return _GENERATORS[name].manual_seed(int(seed) % (2**63))


def step_generator(device: torch.device, refs: BatchRefs, salt: int) -> torch.Generator:
    """A generator on `device` for one term's draws at one step (distinct per term through `salt`)."""
    return _device_generator(device, refs.seed * 1_000_003 + salt)


def apply_term(term: CompatibilityTerm, embeddings: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
               refs: BatchRefs | None) -> torch.Tensor:
    """term(embeddings, images, labels), passing `refs` to the terms that use the bank."""
    if term.needs_bank:
        return term(embeddings, images, labels, refs=refs)
    return term(embeddings, images, labels)




def register_compat_method(name: str, *, description: str | None = None):
    """Class decorator: register a `CompatibilityTerm` subclass as ``compat.method: name`` (its
    docstring, or ``description``, is the line `hetsearch list` shows)."""
    def decorator(cls: type[CompatibilityTerm]) -> type[CompatibilityTerm]:
        if not (isinstance(cls, type) and issubclass(cls, CompatibilityTerm)):
            raise TypeError(f"compat method {name!r}: register a CompatibilityTerm subclass (with a build "
                            f"classmethod), got {cls!r}")
        if cls.build is CompatibilityTerm.build:
            raise TypeError(f"compat method {name!r}: {cls.__name__} does not define build()")
        return METHODS.add(name, cls, description=description)

    return decorator


def compat_methods() -> list[str]:
    return ["none", *METHODS.names()]


class SumOfTerms(CompatibilityTerm):
    """Several compatibility terms against one gallery model: Σ weight_i · term_i.

    `last_parts` holds each part's unweighted value at the last call, for the training log.
    """

    def __init__(self, terms: dict[str, CompatibilityTerm], weights: dict[str, float]):
        super().__init__()
        ids = {term.gallery_model_id for term in terms.values()}
        if len(ids) != 1:  # cannot happen through build_compat_term (one gallery_model); guards direct use
            raise ValueError(f"SumOfTerms: the parts were built against different gallery models: {sorted(ids)}")
        self.terms = nn.ModuleDict(terms)
        self.weights = {name: float(weights.get(name, 1.0)) for name in terms}
        self.method = "+".join(terms)
        self.gallery_model_id = ids.pop()
        self.summary = {"method": self.method, "term_weights": self.weights,
                        "terms": {name: term.summary for name, term in terms.items()}}
        self.last_parts: dict[str, torch.Tensor] = {}
        self.needs_labels = any(term.needs_labels for term in terms.values())
        self.needs_gallery_forward = any(term.needs_gallery_forward for term in terms.values())
        self.same_head = any(term.same_head for term in terms.values())
        sources = [view_source(term) for term in terms.values() if view_source(term) is not None]
        self.view_source = sources[0] if sources else None
        self.needs_bank = bool(sources)
        self.match_views = all(t.match_views for t in terms.values() if view_source(t) is not None)
        keys = {getattr(s, "key", None) for s in sources}
        if len(keys) > 1:  # cannot happen through build_compat_term (one compat.bank)
            raise ValueError("SumOfTerms: the parts use different gallery embedding banks")

    def forward(self, embeddings: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                refs: BatchRefs | None = None) -> torch.Tensor:
        parts = {name: apply_term(term, embeddings, images, labels, refs) for name, term in self.terms.items()}
        self.last_parts = {name: value.detach() for name, value in parts.items()}
        return sum(self.weights[name] * value for name, value in parts.items())


def term_classes(method: str) -> dict[str, type[CompatibilityTerm]]:
    """compat.method -> {part: its registered term class} ({} for "none"), without building anything:
    what the trainer and the config check read the terms' needs from."""
    if method == "none":
        return {}
    return {part: METHODS[part] for part in method_parts(method)}


def build_compat_term(cfg, *, model_spec=None, classes: Optional[list[str]] = None, train_set=None,
                      run_dir: Optional[Path] = None, device: torch.device | str = "cpu",
                      augment=None) -> CompatibilityTerm | None:
    """`None` for method "none" (independent training); otherwise the registered term(s), each built
    by its class's `build` from the query model's spec, the class names, the training split, the run
    folder, the device and the trainer's augmentation config.

    With a `run_dir`, the term's summary is written to `run_dir/compat.json`.
    """
    cfg.validate()
    classes_of = term_classes(cfg.method)
    if not classes_of:
        return None
    if not cfg.gallery_model:
        raise ConfigError(f"compat.gallery_model: method {cfg.method!r} needs the path of a gallery "
                          "model checkpoint (e.g. compat.gallery_model=runs/gallery/model.pt)")
    terms = {part: cls.build(cfg, model_spec=model_spec, classes=classes, train_set=train_set, run_dir=run_dir,
                             device=device, augment=augment)
             for part, cls in classes_of.items()}
    term = next(iter(terms.values())) if len(terms) == 1 else SumOfTerms(terms, dict(cfg.term_weights))
    if run_dir is not None:
        atomic_write_json(Path(run_dir) / SUMMARY_FILE, {"gallery_model": str(cfg.gallery_model),
                                                         "weight": cfg.weight, **term.summary})
    return term
