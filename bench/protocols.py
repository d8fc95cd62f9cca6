"""Protocols and model recipes for the experiment runner (bench/runner.py): how a run is trained and
scored. `run_job(settings, run)` is the runner's work function for the gallery/query-model benches.

A protocol is one `Protocol` entry in `PROTOCOLS`: its data (final phase, and select phase, whose
validation split shares no image, and in the open set no class, with the test split), how to build
its gallery model, how to make a query model, and how to score a (query, gallery) pair on the
validation or the test split. Adding one is one `register(Protocol(...))`; e.g. the catalogue
refresh (issue 20, `hetsearch.train.refresh`, at the end of this file) is the open set with another
`query_model` (the open-set model of the same method and seed, refreshed on the index of the new
classes' catalogue) and another `score` (test: queries never seen against the catalogue,
data.gallery=catalogue; val: the refresh's held-out catalogue items), on the open-set galleries
(`gallery_of`: trained once, shared).

Runs: `Run.method` "paragon" is the protocol's gallery model itself (M(g, g)); any other method is
a compat.method (with METHOD@KEY=VALUE&... variants, bench/runner.py) of a query model of
`Run.model` (`MODELS`) trained against that gallery. Select-phase runs are scored on validation
only (`val_*` metrics), final-phase runs on test only.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import _shared
from runner import Run, digest, method_slug, split_method

from hetsearch.config import TrainRunConfig
from hetsearch.utils.typed_config import load_config

CMPNAS_LABEL = "cmpnas_1.9mf"      # the net CMP-NAS found under 1.9 MFLOPs (closed-set search, docs/results/gap.json)
BANK_METHODS = ("bank_l2", "contrastive", "relational")


@dataclass(frozen=True)
class Settings:
    """What every model of a bench call shares. `tag()` names the settings that change a model
    (so a run trained with other settings is never reused for these)."""

    runs: str = _shared.BENCH_RUNS             # output_dir of every model
    prefix: str = "ga"                         # query-model run names: <prefix>_<protocol>...
    caps: tuple[str, ...] = ()                 # data.* overrides of quick runs (max_train_items, ...)
    data_dir: str | None = None
    device: str | None = None
    threads: int | None = None
    gallery_epochs: int | None = None
    bn_recalibration: int = 20
    overrides: tuple[str, ...] = ()            # --set: config overrides of every query model
    val_classes: float = 2                     # open set, select phase: training classes held out as validation
    cmpnas_arch: tuple[tuple[str, str], ...] = ()  # (protocol, arch): the searched net per protocol
    configs: str = ""                          # folder of gallery.yaml, query_<model>.yaml (default configs/fashion_mnist)
    gallery_overrides: tuple[str, ...] = ()    # config overrides of the gallery models (e.g. their augmentation)
    query_config: str = ""                     # one query config for every model (default query_<model>.yaml)
    data: tuple[str, ...] = ()                 # data.* overrides of every config (recipes written for another source)

    def tag(self) -> str:
        changed = {"bn": self.bn_recalibration, "set": list(self.overrides), "gallery_epochs": self.gallery_epochs}
        # a data set's configs and gallery overrides join the tag only when given (earlier tags unchanged)
        changed.update({k: v for k, v in (("configs", self.configs), ("gallery_set", list(self.gallery_overrides)),
                                          ("query_config", self.query_config), ("data", list(self.data))) if v})
        return "" if changed == {"bn": 20, "set": [], "gallery_epochs": None} else digest(changed)

    @property
    def configs_dir(self) -> Path:
        return _shared.ROOT / self.configs if self.configs else _shared.CONFIGS


# ----------------------------------------------------------------------------- protocols

@dataclass(frozen=True)
class Protocol:
    """How one protocol builds its gallery, makes its query models and scores them (module doc)."""

    name: str
    description: str
    data: tuple[str, ...]                       # data.* overrides of every model, final phase
    select_data: tuple[str, ...]                # ... select phase (validation disjoint from test)
    gallery_name: str = ""                      # the gallery model's run name (default: gallery_<name>)
    gallery_of: str = ""                        # use (share) the galleries of that protocol instead
    gallery: Callable = field(default=None)     # (settings, protocol, phase) -> TrainRunConfig
    query_model: Callable = field(default=None)  # (settings, protocol, run) -> (checkpoint, info dict)
    score: Callable = field(default=None)       # (settings, protocol, run, q_path, g_path, split) -> metrics

    def __post_init__(self):
        defaults = {"gallery_name": f"gallery_{self.name}", "gallery": gallery_config,
                    "query_model": train_query_model, "score": score_pair}
        for key, value in defaults.items():
            if not getattr(self, key):
                object.__setattr__(self, key, value)

    def data_of(self, phase: str, settings: Settings) -> list[str]:
        data = self.select_data if phase == "select" else self.data
        return [d.replace("{val_classes}", f"{settings.val_classes:g}") for d in data]

    def phase_tag(self, phase: str) -> str:
        """"_sel" when the select phase trains on other data than the final phase (open set: fewer classes)."""
        return "_sel" if phase == "select" and self.select_data != self.data else ""


PROTOCOLS: dict[str, Protocol] = {}


def register(protocol: Protocol) -> Protocol:
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is registered twice")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise SystemExit(f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


# ----------------------------------------------------------------------------- models

def cmpnas_arch(settings: Settings, protocol: str) -> tuple[str, str]:
    """(arch, the protocol it was searched on): --cmpnas-arch PROTOCOL=ARCH, else the closed-set
    search of docs/results/gap.json (an open-set row then says that its net saw the test classes)."""
    given = dict(settings.cmpnas_arch)
    if protocol in given:
        return given[protocol], protocol
    rows = json.loads((_shared.ROOT / "docs" / "results" / "gap.json").read_text())["rows"]
    return next(r["arch"] for r in rows if r.get("label") == CMPNAS_LABEL), "closed_set"


def model_recipe(settings: Settings, protocol: str, model: str) -> tuple[str, list[str], dict]:
    """(config file, overrides, row info) of a query model; cmpnas: the searched backbone with the
    ShuffleNetV2 recipe."""
    if model == "cmpnas":
        arch, searched_on = cmpnas_arch(settings, protocol)
        return ("query_shufflenetv2_x0_5.yaml", ["model.backbone=cmpnas", f"model.backbone_args={{arch: '{arch}'}}"],
                {"arch": arch, "arch_searched_on": searched_on})
    return settings.query_config or f"query_{model}.yaml", [], {}


MODELS = ("shufflenetv2_x0_5", "mobilenetv3_small", "cmpnas")


# ----------------------------------------------------------------------------- configs

def common_overrides(settings: Settings, protocol: Protocol, phase: str) -> list[str]:
    out = [f"output_dir={settings.runs}", "runtime.progress=false", *settings.data, *protocol.data_of(phase, settings),
           *settings.caps]
    if settings.data_dir:
        out.append(f"data.root={settings.data_dir}")
    if settings.device:
        out.append(f"runtime.device={settings.device}")
    if settings.threads:
        out.append(f"runtime.num_threads={settings.threads}")
    return out


def gallery_owner(protocol: Protocol) -> Protocol:
    """The protocol whose galleries `protocol` uses (itself unless `gallery_of`)."""
    return get_protocol(protocol.gallery_of) if protocol.gallery_of else protocol


def gallery_run_name(settings: Settings, protocol: Protocol, phase: str) -> str:
    protocol = gallery_owner(protocol)
    name = protocol.gallery_name + ("_val" if protocol.phase_tag(phase) else "")
    name += f"_e{settings.gallery_epochs}" if settings.gallery_epochs else ""
    return name + (f"_g{digest(list(settings.gallery_overrides), 6)}" if settings.gallery_overrides else "")


def gallery_config(settings: Settings, protocol: Protocol, phase: str) -> TrainRunConfig:
    """The paragon recipe (<configs>/gallery.yaml) on the protocol's data of `phase`."""
    protocol = gallery_owner(protocol)
    extra = [*common_overrides(settings, protocol, phase), f"name={gallery_run_name(settings, protocol, phase)}"]
    if settings.gallery_epochs:
        extra.append(f"train.epochs={settings.gallery_epochs}")
    return load_config(TrainRunConfig, settings.configs_dir / "gallery.yaml", [*extra, *settings.gallery_overrides])


def gallery_path(settings: Settings, protocol: Protocol, phase: str) -> Path:
    return Path(settings.runs) / gallery_run_name(settings, protocol, phase) / "model.pt"


def run_tag(settings: Settings, protocol: str, model: str) -> str:
    """`Run.tag` of a (protocol, model): the settings' tag, and for a net given by --cmpnas-arch a
    digest of its arch (a run of another arch is never reused for it, nor reported with it)."""
    given = dict(settings.cmpnas_arch)
    parts = [settings.tag()] + ([f"a{digest(given[protocol], 6)}"] if model == "cmpnas" and protocol in given else [])
    return "_".join(p for p in parts if p)


def query_run_name(settings: Settings, protocol: Protocol, run: Run) -> str:
    """Shared by the select and final runs of one configuration when both phases train on the same data."""
    tag = run.tag
    method = split_refresh(run.method)[0]  # refresh options change the refresh, not the model it starts from
    return (f"{settings.prefix}_{run.protocol}{protocol.phase_tag(run.phase)}_{run.model}_{method_slug(method)}"
            f"_s{run.seed}_e{run.epochs}" + (f"_{tag}" if tag else ""))


def query_config(settings: Settings, protocol: Protocol, run: Run) -> TrainRunConfig:
    config, model_overrides, _ = model_recipe(settings, run.protocol, run.model)
    compat_method, variant = split_method(split_refresh(run.method)[0])
    return load_config(TrainRunConfig, settings.configs_dir / config, [
        *common_overrides(settings, protocol, run.phase), f"name={query_run_name(settings, protocol, run)}",
        f"train.epochs={run.epochs}", f"compat.method={compat_method}",
        f"compat.gallery_model={gallery_path(settings, protocol, run.phase)}", f"runtime.seed={run.seed}",
        f"train.bn_recalibration_batches={settings.bn_recalibration}", *model_overrides, *settings.overrides,
        *variant])


def uses_bank(method: str) -> bool:
    return any(part in BANK_METHODS for part in split_method(method)[0].split("+"))


# ----------------------------------------------------------------------------- work (worker processes too)

_SPLITS: dict = {}
# embeddings per (split, data config): a val and a test embedding never mix, nor two protocols' image sets
# that one gallery model embeds (the open set's test_rest gallery and the refresh's catalogue)
_CACHES: dict = {}


def splits_of(cfg: TrainRunConfig):
    """The run's splits, made once per process and data config."""
    from hetsearch.data import make_splits

    key = json.dumps(vars(cfg.data), sort_keys=True, default=str)
    if key not in _SPLITS:
        _SPLITS[key] = make_splits(cfg.data)
    return _SPLITS[key]


def scoring_config(settings: Settings, protocol: Protocol, phase: str) -> TrainRunConfig:
    """A config holding the protocol's own data of `phase` (what its models are scored on)."""
    return load_config(TrainRunConfig, settings.configs_dir / "gallery.yaml", common_overrides(settings, protocol, phase))


def _fast_cudnn(cfg: TrainRunConfig) -> None:
    """Fixed batch shapes: let cuDNN pick its fastest kernels once (GPU runs only)."""
    import torch

    if str(cfg.runtime.device).startswith("cuda") or (cfg.runtime.device == "auto" and torch.cuda.is_available()):
        torch.backends.cudnn.benchmark = True


def train_model(cfg: TrainRunConfig) -> tuple[Path, dict]:
    """Train (or resume, or reuse a finished) run; its checkpoint and training figures."""
    from hetsearch.train import train

    _fast_cudnn(cfg)
    result = train(cfg, resume=True, splits=splits_of(cfg))
    history = result.history
    speeds = [h["images_per_second"] for h in history[1:]] or [h["images_per_second"] for h in history]
    return result.model_path, {
        "train_seconds": round(result.train_seconds, 1), "training_run": cfg.name,
        "train_img_per_s": round(statistics.median(speeds), 1) if speeds else None,
        "val_hetero_curve": [h.get("val_hetero_recall_at_1") for h in history],
        "val_homo_curve": [h.get("val_recall_at_1") for h in history]}


def train_query_model(settings: Settings, protocol: Protocol, run: Run) -> tuple[Path, dict]:
    """The default query model: trained against the protocol's gallery with compat.method."""
    gallery = gallery_path(settings, protocol, run.phase)
    if not gallery.is_file():
        raise FileNotFoundError(f"{gallery}: the {protocol.name} gallery of the {run.phase} phase is not trained "
                                "(the bench trains galleries before query models)")
    path, info = train_model(query_config(settings, protocol, run))
    return path, {**info, **model_recipe(settings, run.protocol, run.model)[2]}


def validation_view(splits, protocol_name: str):
    """The validation split scored like the test split: val items as queries against the training
    split when their classes are trained ones (closed set: trained images as the gallery), else
    against each other, each query excluded from its own results (open set, class-disjoint
    validation, like its test_rest test)."""
    from hetsearch.data.splits import scorable

    if len(splits.val) < 2 or not scorable(splits.val.labels):
        raise ValueError(f"{protocol_name}: no scorable validation split to select on (counts "
                         f"{splits.protocol.get('counts')})")
    seen = set(splits.val.labels.tolist()) <= set(splits.train_classes)
    gallery = splits.train if seen and not splits.exclude_self else splits.val
    return dataclasses.replace(splits, query=splits.val, gallery=gallery, exclude_self=gallery is splits.val)


def score_pair(settings: Settings, protocol: Protocol, run: Run, q_path: Path, g_path: Path, split: str) -> dict:
    """M(q, g) and M(q, q) on `split` ("val": the validation view, metrics named val_*; "test")."""
    from hetsearch.eval.report import evaluate_loaded
    from hetsearch.models import load_checkpoint

    cfg = scoring_config(settings, protocol, run.phase)
    splits = splits_of(cfg)
    splits = validation_view(splits, protocol.name) if split == "val" else splits
    g = load_checkpoint(g_path)
    q = g if Path(q_path) == Path(g_path) else load_checkpoint(q_path)
    cache = _CACHES.setdefault((split, repr(cfg.data)), {})
    hetero = evaluate_loaded(q, g, splits, device=cfg.runtime.device, embedding_cache=cache)["metrics"]
    homo = evaluate_loaded(q, q, splits, device=cfg.runtime.device, embedding_cache=cache)["metrics"]
    if q is not g:  # keep the gallery model's embeddings only
        for key in [k for k in cache if k[0] == q.meta.model_id]:
            del cache[key]
    p = "val_" if split == "val" else ""
    return {f"{p}recall_at_1": hetero["recall_at_1"], f"{p}map_at_r": hetero["map_at_r"],
            f"{p}homo_recall_at_1": homo["recall_at_1"], f"{p}homo_map_at_r": homo["map_at_r"],
            "query_model": q.meta.model_id, "gallery_model": g.meta.model_id,
            "query_mflops": q.meta.flops / 1e6, "gallery_mflops": g.meta.flops / 1e6,
            "scored_on": f"{split}: {len(splits.query)} queries vs {len(splits.gallery)} gallery items"}


def run_job(settings: Settings, run: Run) -> dict:
    """The runner's work function: train (or reuse) and score one run. Select phase: validation
    metrics only; final phase: test metrics only."""
    protocol = get_protocol(run.protocol)
    split = "val" if run.phase == "select" else "test"
    if run.method == "paragon":
        q_path, info = train_model(protocol.gallery(settings, protocol, run.phase))
        g_path = q_path
    else:
        g_path = gallery_path(settings, protocol, run.phase)
        q_path, info = protocol.query_model(settings, protocol, run)
    metrics = protocol.score(settings, protocol, run, q_path, g_path, split)
    return {**info, **metrics, "label": f"{run.model} / {run.method}", "split": split, "settings_tag": settings.tag()}


def build_bank(settings: Settings, run: Run) -> dict:
    """Open (building if needed) the bank a query run would use, in this process (before parallel
    runs need it: two workers must not build one bank at once); its summary."""
    from hetsearch.compat.bank_terms import open_bank
    from hetsearch.models.embedding_model import spec_from_config
    from hetsearch.utils.device import resolve_device

    run = training_run(run)
    protocol = get_protocol(run.protocol)
    cfg = query_config(settings, protocol, run)
    splits = splits_of(cfg)
    spec = spec_from_config(cfg.model, cfg.data, num_classes=len(splits.classes))
    bank = open_bank(cfg.compat, model_spec=spec, train_set=splits.train, run_dir=cfg.run_dir,
                     device=resolve_device(cfg.runtime.device), augment=cfg.train.augment, method=cfg.compat.method)
    return bank.summary


# ----------------------------------------------------------------------------- the built-in protocols

CLOSED_SET = register(Protocol(
    "closed_set", "train and test share the 10 classes; queries = test images, gallery = the whole training "
    "split; validation = a stratified 10% of the training images, each against the training images",
    data=("data.protocol=closed_set",), select_data=("data.protocol=closed_set",), gallery_name="gallery"))
OPEN_SET = register(Protocol(
    "open_set", "5 training classes, 5 held-out test classes (queries = their test images, each against the "
    "others); select phase: {val_classes} of the 5 training classes held out of training as validation classes "
    "(each validation image against the others), galleries and query models trained on the rest; final phase: "
    "trained on the 5 (minus a stratified 10% of their images)",
    data=("data.protocol=open_set",), select_data=("data.protocol=open_set", "data.val_classes={val_classes}")))


# ----------------------------------------------------------------------------- catalogue refresh (issue 20)
# New classes arrive as a catalogue that the gallery model indexes; their queries are never seen.
# Final phase: the 5 test classes' own training images are the catalogue (data.gallery=catalogue),
# their test images the queries. Select phase: the validation classes play the new classes (their
# images, held out of training, are the catalogue) and a refresh is scored on its own validation
# split, the held-out share of the catalogue (hetsearch.train.refresh), never on test images.
# A method variant may carry refresh options: "METHOD@...&refresh.epochs=3&refresh.replay=0.25".

REFRESH_DEFAULTS = {"epochs": 2}   # else hetsearch.train.refresh.RefreshConfig's defaults


def split_refresh(method: str) -> tuple[str, dict]:
    """("METHOD@rest", {refresh option: value}) of a method variant."""
    import yaml

    name, variant = split_method(method)
    options = {k.split(".", 1)[1]: yaml.safe_load(v) for k, v in (i.split("=", 1) for i in variant)
               if k.startswith("refresh.")}
    rest = [i for i in variant if not i.startswith("refresh.")]
    return name + ("@" + "&".join(rest) if rest else ""), {**REFRESH_DEFAULTS, **options}


TRAINS_AS = {"open_set_refresh": "open_set", "open_set_map": "open_set",   # protocols whose models start from another's
             "closed_set_map": "closed_set"}


def training_run(run: Run) -> Run:
    """The run whose query model `run` trains (a refresh or map run: the open-set model it starts from)."""
    if run.protocol not in TRAINS_AS:
        return run
    return dataclasses.replace(run, protocol=TRAINS_AS[run.protocol], method=split_refresh(run.method)[0])


def catalogue_index(settings: Settings, protocol: Protocol, phase: str, which: str = "catalogue") -> Path:
    """The index of the phase's catalogue (or, which="training", of its training images), built once by the
    phase's gallery model."""
    from hetsearch.index import build_index
    from hetsearch.index.items import GalleryItems
    from hetsearch.models import load_checkpoint

    folder = Path(settings.runs) / f"{gallery_run_name(settings, protocol, phase)}_{which}_index"
    if (folder / "manifest.json").is_file():
        return folder
    splits = splits_of(scoring_config(settings, protocol, phase))
    catalogue = splits.train if which == "training" else splits.val if phase == "select" else splits.gallery
    items = GalleryItems(images=catalogue.images, sources=list(catalogue.sources),
                         labels=[catalogue.classes[int(i)] for i in catalogue.labels],
                         fields=[{} for _ in range(len(catalogue))])
    build_index(folder, load_checkpoint(gallery_path(settings, protocol, phase)), items)
    return folder


def refreshed_query_model(settings: Settings, protocol: Protocol, run: Run) -> tuple[Path, dict]:
    """The open-set query model of the same method and seed, refreshed on the catalogue index."""
    from hetsearch.train.refresh import RefreshConfig, refresh

    options = split_refresh(run.method)[1]
    base_path, info = train_query_model(settings, OPEN_SET, training_run(run))
    index = catalogue_index(settings, protocol, run.phase)
    overrides = {"runtime.progress": "false", **({"runtime.num_threads": settings.threads} if settings.threads else {}),
                 **({"runtime.device": settings.device} if settings.device else {})}
    result = refresh(RefreshConfig(index=str(index), query_model=str(base_path), output_dir=settings.runs,
                                   name=f"{query_run_name(settings, protocol, run)}_r{digest(options, 6)}",
                                   seed=run.seed, overrides=overrides,
                                   **options), resume=True)
    last = result.train.history[-1] if result.train.history else {}
    return result.train.model_path, {
        **info, "refreshed_from": info.get("training_run"), "refresh_options": options, "refresh_index": str(index),
        "refresh_seconds": round(result.train.train_seconds, 1), "refresh_items": result.info,
        "refresh_val_hetero_recall_at_1": last.get("val_hetero_recall_at_1"),
        "refresh_val_recall_at_1": last.get("val_recall_at_1")}


def score_refresh(settings: Settings, protocol: Protocol, run: Run, q_path: Path, g_path: Path, split: str) -> dict:
    """Test: queries never seen against the catalogue (score_pair on data.gallery=catalogue). Val: the
    refresh's own validation, held-out catalogue items each against the others (M(q, g) and M(q, q))."""
    if split == "test" or Path(q_path) == Path(g_path):
        return score_pair(settings, protocol, run, q_path, g_path, split)
    from hetsearch.models.checkpoint import ModelMeta, read_checkpoint_file

    last = json.loads((Path(q_path).parent / "metrics.jsonl").read_text().splitlines()[-1])
    q, g = (ModelMeta.from_dict(read_checkpoint_file(p)["meta"]) for p in (q_path, g_path))
    return {"val_recall_at_1": last["val_hetero_recall_at_1"], "val_map_at_r": last["val_hetero_map_at_r"],
            "val_homo_recall_at_1": last["val_recall_at_1"], "val_homo_map_at_r": last["val_map_at_r"],
            "query_model": q.model_id, "gallery_model": g.model_id, "query_mflops": q.flops / 1e6,
            "gallery_mflops": g.flops / 1e6,
            "scored_on": "val: the refresh's held-out catalogue items, each against the others"}


OPEN_SET_REFRESH = register(Protocol(
    "open_set_refresh", "open set with a catalogue refresh: the open-set query model fine-tuned label-free on the "
    "index of the new classes' catalogue (hetsearch refresh, replay of its own training images); final phase: "
    "catalogue = the 5 test classes' training images, queries = their test images (never seen); select phase: the "
    "{val_classes} validation classes' images are the catalogue, scored on the refresh's held-out share of it",
    data=(*OPEN_SET.data, "data.gallery=catalogue"), select_data=OPEN_SET.select_data, gallery_of="open_set",
    query_model=refreshed_query_model, score=score_refresh))


# ----------------------------------------------------------------------------- the map without a catalogue (issue 20.2)
# The open set without refresh, one more lever: the closed-form map of `hetsearch refresh epochs=0`, fitted on
# an index of the query model's own training images (no image of a new class anywhere), scored like open_set.

def mapped_query_model(settings: Settings, protocol: Protocol, run: Run) -> tuple[Path, dict]:
    """The query model of the same method and seed (trained by the protocol it maps) with the map fitted on
    its training images."""
    from hetsearch.train.refresh import RefreshConfig, refresh

    base = training_run(run)
    base_path, info = train_query_model(settings, get_protocol(base.protocol), base)
    index = catalogue_index(settings, protocol, run.phase, which="training")
    overrides = {"runtime.progress": "false", **({"runtime.num_threads": settings.threads} if settings.threads else {}),
                 **({"runtime.device": settings.device} if settings.device else {})}
    result = refresh(RefreshConfig(index=str(index), query_model=str(base_path), output_dir=settings.runs, epochs=0,
                                   name=f"{query_run_name(settings, protocol, run)}_map", seed=run.seed,
                                   overrides=overrides), resume=True)
    return result.train.model_path, {**info, "mapped_from": info.get("training_run"), "map_index": str(index),
                                     "linear_map": result.train.meta.extra.get("linear_map")}


OPEN_SET_MAP = register(Protocol(
    "open_set_map", "the open set, its query model followed by the closed-form map of `hetsearch refresh epochs=0` "
    "fitted on an index of its own training images (the map's λ and whether to apply it chosen on held-out "
    "training items); scored like open_set", data=OPEN_SET.data, select_data=OPEN_SET.select_data,
    gallery_of="open_set", query_model=mapped_query_model))
CLOSED_SET_MAP = register(Protocol(
    "closed_set_map", "the closed set, its query model followed by the same map (fitted on an index of its training "
    "images); scored like closed_set", data=CLOSED_SET.data, select_data=CLOSED_SET.select_data,
    gallery_of="closed_set", query_model=mapped_query_model))
