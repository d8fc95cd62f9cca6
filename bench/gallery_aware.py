"""Issue 15: gallery-aware compatibility. Query models trained against the gallery's own embeddings
(the gallery embedding bank) vs independent, BCT and L2, closed and open set.

From nothing, in order (each step reuses what a previous call finished):
  1. the galleries: the closed-set paragon (configs/fashion_mnist/gallery.yaml, 15 epochs, shared
     with the other benches) and an open-set gallery (the same recipe, data.protocol=open_set:
     trained on 5 classes);
  2. their gallery embedding banks (compat.bank, K views per training image);
  3. a throughput probe: every method on ShuffleNetV2 x0.5, one after another, alone on the
     device (images/s of training, and the ratio to independent training);
  4. query models at --epochs: the first of --models with every --method (seed 0) on both
     protocols, then its other --seeds for the two best methods per protocol (by that seed-0
     heterogeneous Recall@1); then the other models the same way (--seed-models: which get seeds).
     Query models use the gallery's data protocol (open set: the 5 training classes) and are
     scored on its test protocol (open set: the 5 held-out classes, queries = their test images,
     gallery = the rest of those test images).
Each finished query model writes runs/<...>/ga_rows/<run>.json; the results files
docs/results/gallery_aware{,_quick}.{json,md} are rewritten after every finished run, so a run
cut short still leaves its results, and the next call continues where it stopped.

    python bench/gallery_aware.py --quick                     # minutes on CPU: checks it runs
    python bench/gallery_aware.py --device cuda --jobs 12 --data-dir DIR   # the full bench (GPU)
    python bench/gallery_aware.py --methods none,bct,contrastive --models shufflenetv2_x0_5 --seeds 0

Models: shufflenetv2_x0_5, mobilenetv3_small (x0.5) and cmpnas (the net CMP-NAS found under
1.9 MFLOPs, arch from docs/results/gap.json, trained like the other two). Methods: any
compat.method (none = independent), e.g. contrastive+relational.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import _shared

from hetsearch.config import TrainRunConfig
from hetsearch.utils.io import atomic_write_json
from hetsearch.utils.results import command_line, write_results
from hetsearch.utils.typed_config import load_config

PROTOCOLS = ("closed_set", "open_set")
# METHOD@KEY=VALUE: a variant. "...@train.task_loss=none": label-free (no classification loss, no label
# used; the best open-set method in the 6-epoch full-data CPU runs, docs/compat.md "Which method when").
# τ 0.05 did better than the default 0.1 on the open set in one quick CPU run, but c+r at τ 0.05 was 3
# points worse than at 0.1 on the full-data open set (6 epochs, seed 0): kept here to settle it at 30 epochs
DEFAULT_METHODS = ("none", "bct", "l2", "contrastive", "contrastive+relational", "bct+contrastive",
                   "contrastive+relational@train.task_loss=none", "contrastive@compat.gallery_aware.temperature=0.05")
BANK_METHODS = ("bank_l2", "contrastive", "relational")
DEFAULT_MODELS = ("shufflenetv2_x0_5", "mobilenetv3_small", "cmpnas")
CMPNAS_LABEL = "cmpnas_1.9mf"
QUICK = {"gallery_epochs": 3, "epochs": 3, "max_train_items": 10000, "max_test_items": 2000,
         "probe_steps": 20, "methods": ("none", "bct", "bank_l2", "contrastive", "contrastive+relational",
                                       "bct+contrastive", "contrastive@train.task_loss=none"),
         "models": ("shufflenetv2_x0_5",), "seeds": (0,)}
GAP_CLOSED, GAP_OPEN, SPEED_RATIO, MIN_FLOPS_REDUCTION = 0.015, 0.05, 0.8, 30.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10k training images, 3-epoch galleries and query models, "
                                                        "ShuffleNetV2 only, seed 0 (checks that it runs)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: auto). AMP (bf16) is on on cuda")
    p.add_argument("--epochs", type=int, default=None, help="query-model epochs (default 30; quick 3)")
    p.add_argument("--gallery-epochs", type=int, default=None, help="gallery epochs (default: the paragon's 15; quick 3)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; quick 0). Seed 0 runs every "
                                                 "method, the others only the two best methods per protocol")
    p.add_argument("--methods", default=None, help=f"comma-separated compat methods (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--models", default=None, help=f"comma-separated query models (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--seed-models", default=None, help="models that get the extra seeds (default: all --models)")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help="closed_set,open_set (default both)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (data.root)")
    p.add_argument("--jobs", type=int, default=None, help="query models trained at once (default: 1 on CPU, "
                                                          "min(8, cores - 2) on cuda)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per training process (default: 1 "
                                                             "with --jobs > 1, else torch's default)")
    p.add_argument("--probe-steps", type=int, default=None,
                   help="steps per throughput-probe epoch (default 60; quick 20). 0: run no probe and report the "
                        "probe numbers an earlier call stored (same --set/--device), for a machine that is not quiet")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every query model (e.g. compat.gallery_aware.temperature=0.07); "
                        "a single method takes its own as METHOD@KEY=VALUE&KEY=VALUE in --methods")
    p.add_argument("--bn-recalibration", type=int, default=20,
                   help="train.bn_recalibration_batches of every query model (default 20; 0: off)")
    p.add_argument("--runs", default=None, help="runs folder (default runs/bench, quick runs/bench_ga_quick)")
    p.add_argument("--report-only", action="store_true", help="rewrite the results from finished runs only")
    args = p.parse_args()
    q = args.quick
    args.epochs = args.epochs or (QUICK["epochs"] if q else 30)
    args.gallery_epochs = args.gallery_epochs or (QUICK["gallery_epochs"] if q else None)
    args.seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(QUICK["seeds"] if q else (0, 1, 2))
    args.methods = args.methods.split(",") if args.methods else list(QUICK["methods"] if q else DEFAULT_METHODS)
    args.models = args.models.split(",") if args.models else list(QUICK["models"] if q else DEFAULT_MODELS)
    args.protocols = args.protocols.split(",")
    args.seed_models = args.seed_models.split(",") if args.seed_models else list(args.models)
    if args.probe_steps is None:
        args.probe_steps = QUICK["probe_steps"] if q else 60
    bad = sorted(set(args.models) - set(DEFAULT_MODELS)) + sorted(set(args.protocols) - set(PROTOCOLS))
    if bad:
        raise SystemExit(f"unknown model(s)/protocol(s) {bad}; models: {DEFAULT_MODELS}, protocols: {PROTOCOLS}")
    import torch

    cuda = (args.device or "").startswith("cuda") or (args.device is None and torch.cuda.is_available())
    args.jobs = args.jobs or (min(8, max(1, (os.cpu_count() or 2) - 2)) if cuda else 1)
    args.threads = args.threads or (1 if args.jobs > 1 else None)
    # quick: its own folder (the other benches' quick galleries use other caps)
    args.runs = args.runs or (f"{_shared.BENCH_RUNS}_ga_quick" if q else _shared.BENCH_RUNS)
    return args


# ----------------------------------------------------------------------------- configs

def common_overrides(args, protocol: str) -> list[str]:
    out = [f"output_dir={args.runs}", "runtime.progress=false", f"data.protocol={protocol}"]
    if args.quick:
        out += [f"data.max_train_items={QUICK['max_train_items']}", f"data.max_test_items={QUICK['max_test_items']}"]
    if args.data_dir:
        out.append(f"data.root={args.data_dir}")
    if args.device:
        out.append(f"runtime.device={args.device}")
    if args.threads:
        out.append(f"runtime.num_threads={args.threads}")
    return out


def gallery_name(protocol: str) -> str:
    return "gallery" if protocol == "closed_set" else "gallery_open_set"


def gallery_config(args, protocol: str) -> TrainRunConfig:
    extra = [*common_overrides(args, protocol), f"name={gallery_name(protocol)}"]
    if args.gallery_epochs:
        extra.append(f"train.epochs={args.gallery_epochs}")
    return load_config(TrainRunConfig, _shared.CONFIGS / "gallery.yaml", extra)


def cmpnas_arch() -> str:
    rows = json.loads((_shared.ROOT / "docs" / "results" / "gap.json").read_text())["rows"]
    return next(r["arch"] for r in rows if r.get("label") == CMPNAS_LABEL)


def model_overrides(model: str) -> tuple[str, list[str]]:
    """(config file, overrides): cmpnas is the searched backbone with the light-model recipe."""
    if model == "cmpnas":
        return "query_shufflenetv2_x0_5.yaml", ["model.backbone=cmpnas", f"model.backbone_args={{arch: '{cmpnas_arch()}'}}"]
    return f"query_{model}.yaml", []


def split_method(method: str) -> tuple[str, list[str]]:
    """"contrastive@compat.gallery_aware.temperature=0.1&compat.weight=2" -> (compat.method, overrides)."""
    name, _, variant = method.partition("@")
    return name, [item for item in variant.split("&") if item]


def method_slug(method: str) -> str:
    """A method as it appears in run names: "+" -> "_", a variant's overrides -> a short digest."""
    import hashlib

    name, variant = split_method(method)
    slug = name.replace("+", "_")
    return f"{slug}_v{hashlib.sha256('&'.join(variant).encode()).hexdigest()[:8]}" if variant else slug


def run_name(protocol: str, model: str, method: str, seed: int, epochs: int) -> str:
    return f"ga_{protocol}_{model}_{method_slug(method)}_s{seed}_e{epochs}"


def query_config(args, protocol: str, model: str, method: str, seed: int, epochs: int | None = None,
                 name: str | None = None, extra: list[str] = ()) -> TrainRunConfig:
    epochs = epochs or args.epochs
    config, overrides = model_overrides(model)
    gallery = Path(args.runs) / gallery_name(protocol) / "model.pt"
    compat_method, variant = split_method(method)
    return load_config(TrainRunConfig, _shared.CONFIGS / config, [
        *common_overrides(args, protocol), f"name={name or run_name(protocol, model, method, seed, epochs)}",
        f"train.epochs={epochs}", f"compat.method={compat_method}", f"compat.gallery_model={gallery}",
        f"runtime.seed={seed}", f"train.bn_recalibration_batches={args.bn_recalibration}", *overrides, *args.set,
        *variant, *extra])


def uses_bank(method: str) -> bool:
    return any(part in BANK_METHODS for part in split_method(method)[0].split("+"))


# ----------------------------------------------------------------------------- work (in worker processes too)

_SPLITS: dict = {}
_CACHE: dict = {}


def _splits(cfg: TrainRunConfig):
    from hetsearch.data import make_splits

    key = json.dumps(vars(cfg.data), sort_keys=True, default=str)
    if key not in _SPLITS:
        _SPLITS[key] = make_splits(cfg.data)
    return _SPLITS[key]


def _fast_cudnn(cfg: TrainRunConfig) -> None:
    """Fixed batch shapes: let cuDNN pick its fastest kernels once (GPU runs only)."""
    import torch

    if str(cfg.runtime.device).startswith("cuda") or (cfg.runtime.device == "auto" and torch.cuda.is_available()):
        torch.backends.cudnn.benchmark = True


def train_gallery(cfg: TrainRunConfig) -> dict:
    from hetsearch.train import train

    _fast_cudnn(cfg)

    result = train(cfg, resume=True, splits=_splits(cfg))
    return {"name": cfg.name, "train_seconds": result.train_seconds}


def train_and_score(job: dict) -> dict:
    """Train one query model (resuming/reusing), score it, write and return its row."""
    from hetsearch.eval.report import evaluate_loaded
    from hetsearch.models import load_checkpoint
    from hetsearch.train import train

    cfg: TrainRunConfig = job["cfg"]
    _fast_cudnn(cfg)
    splits = _splits(cfg)
    result = train(cfg, resume=True, splits=splits)
    device = cfg.runtime.device
    paragon = load_checkpoint(cfg.compat.gallery_model)
    q = load_checkpoint(result.model_path)
    hetero = evaluate_loaded(q, paragon, splits, device=device, embedding_cache=_CACHE)["metrics"]
    homo = evaluate_loaded(q, q, splits, device=device, embedding_cache=_CACHE)["metrics"]
    history = result.history
    speeds = [h["images_per_second"] for h in history[1:]] or [h["images_per_second"] for h in history]
    row = {"protocol": job["protocol"], "method": job["method"], "model": job["model"], "seed": job["seed"],
           "epochs": cfg.train.epochs, "query_model": q.meta.model_id, "gallery_model": paragon.meta.model_id,
           "recall_at_1": hetero["recall_at_1"], "map_at_r": hetero["map_at_r"],
           "homo_recall_at_1": homo["recall_at_1"], "homo_map_at_r": homo["map_at_r"],
           "query_mflops": q.meta.flops / 1e6, "gallery_mflops": paragon.meta.flops / 1e6,
           "train_seconds": round(result.train_seconds, 1),
           "train_img_per_s": round(statistics.median(speeds), 1) if speeds else None,
           "val_hetero_curve": [h.get("val_hetero_recall_at_1") for h in history],
           "val_homo_curve": [h.get("val_recall_at_1") for h in history], "run": cfg.name,
           "settings": job["settings"], "command": command_line()}
    atomic_write_json(Path(job["rows_dir"]) / f"{cfg.name}.json", row)
    return row


def paragon_row(args, protocol: str, cache: dict | None = None) -> dict:
    """The gallery's own M(g, g) on the test protocol; `cache` (the bench state) keeps it per gallery model."""
    from hetsearch.eval.report import evaluate_loaded
    from hetsearch.models import load_checkpoint

    cfg = gallery_config(args, protocol)
    g = load_checkpoint(cfg.run_dir / "model.pt")
    key = f"{protocol}:{g.meta.model_id}"
    if cache is not None and key in cache:
        return dict(cache[key])
    m = evaluate_loaded(g, g, _splits(cfg), device=cfg.runtime.device, embedding_cache=_CACHE)["metrics"]
    row = {"protocol": protocol, "method": "paragon", "model": "resnet18_w16", "seed": cfg.runtime.seed,
            "epochs": cfg.train.epochs, "query_model": g.meta.model_id, "gallery_model": g.meta.model_id,
            "recall_at_1": m["recall_at_1"], "map_at_r": m["map_at_r"], "homo_recall_at_1": m["recall_at_1"],
            "homo_map_at_r": m["map_at_r"], "query_mflops": g.meta.flops / 1e6, "gallery_mflops": g.meta.flops / 1e6,
            "train_seconds": g.meta.extra.get("train_seconds"), "train_img_per_s": None}
    if cache is not None:
        cache[key] = dict(row)
    return row


def build_bank_for(cfg: TrainRunConfig) -> dict:
    """Open (building if needed) the bank a query run of `cfg` would use; returns its summary."""
    from hetsearch.compat.bank_terms import open_bank
    from hetsearch.models.embedding_model import spec_from_config
    from hetsearch.utils.device import resolve_device

    splits = _splits(cfg)
    spec = spec_from_config(cfg.model, cfg.data, num_classes=len(splits.classes))
    bank = open_bank(cfg.compat, model_spec=spec, train_set=splits.train, run_dir=cfg.run_dir,
                     device=resolve_device(cfg.runtime.device), augment=cfg.train.augment, method=cfg.compat.method)
    return bank.summary


def probe(args, method: str, model: str = "shufflenetv2_x0_5") -> float:
    """Training images/s of `method` alone on the device (2 short epochs; the second is timed)."""
    import shutil

    from hetsearch.train import train

    name = f"ga_probe_{method_slug(method)}"
    cfg = query_config(args, "closed_set", model, method, 0, epochs=2, name=name,
                       extra=[f"train.max_steps_per_epoch={args.probe_steps}", "runtime.eval_every=0",
                              "train.bn_recalibration_batches=0"])  # training steps only
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    result = train(cfg, resume=False, splits=_splits(cfg))
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    return float(result.history[-1]["images_per_second"])


# ----------------------------------------------------------------------------- reporting

def row_settings(args) -> dict:
    """What, besides protocol, epochs and gallery, makes two query-model rows comparable."""
    return {"set": list(args.set), "bn_recalibration": args.bn_recalibration}


def same_protocol(row: dict, args, galleries: dict[str, str]) -> bool:
    """A finished run belongs in the results: same query epochs, gallery model (`galleries`: protocol ->
    the gallery model id of each protocol whose gallery exists) and settings, whatever --protocols says. Every method, model and seed finished so far is kept, whatever this
    call's --methods/--models/--seeds (a call that adds methods must not drop earlier rows).
    Rows written before settings were recorded ran with the defaults (no --set, 20 BN batches)."""
    settings = row.get("settings", {"set": [], "bn_recalibration": 20})
    return (row["protocol"] in galleries and row["epochs"] == args.epochs and settings == row_settings(args)
            and row["gallery_model"] == galleries[row["protocol"]])


def stored_probes(state: dict, settings: str) -> tuple[dict, str]:
    """(probe numbers, the settings they were measured with): this call's settings if measured, else
    (with --probe-steps 0) the most recent entry with the same --set and --device."""
    by = state.get("probes_by_settings", {})
    if by.get(settings):
        return by[settings], settings
    want = json.loads(settings)
    for key, probes in reversed(list(by.items())):
        got = json.loads(key)
        if probes and got.get("set") == want["set"] and got.get("device") == want["device"]:
            return probes, key
    return {}, settings


def summarise(rows: list[dict]) -> list[dict]:
    """Mean (and spread) over seeds per (protocol, method, model)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["method"] != "paragon":
            groups.setdefault((r["protocol"], r["method"], r["model"]), []).append(r)
    paragon = {r["protocol"]: r for r in rows if r["method"] == "paragon"}
    out = []
    for (protocol, method, model), rs in sorted(groups.items()):
        het = [r["recall_at_1"] for r in rs]
        homo = [r["homo_recall_at_1"] for r in rs]
        p = paragon.get(protocol)
        mean = statistics.mean(het)
        out.append({"protocol": protocol, "method": method, "model": model, "seeds": len(rs),
                    "recall_at_1_mean": mean, "recall_at_1_std": statistics.pstdev(het) if len(het) > 1 else 0.0,
                    "homo_recall_at_1_mean": statistics.mean(homo),
                    "map_at_r_mean": statistics.mean(r["map_at_r"] for r in rs),
                    "gap_points": round(100 * (mean - p["recall_at_1"]), 2) if p else None,
                    "flops_reduction": round(p["query_mflops"] / rs[0]["query_mflops"], 1) if p else None,
                    "query_mflops": rs[0]["query_mflops"],
                    "compatible": bool(mean > statistics.mean(homo)),
                    "train_img_per_s": statistics.median([r["train_img_per_s"] for r in rs if r.get("train_img_per_s")] or [0])})
    return out


def best_methods(rows: list[dict], protocol: str, methods: list[str], model: str, seed: int,
                 count: int = 2) -> list[str]:
    """The `count` of `methods` with the highest heterogeneous Recall@1 of `model` at `seed`."""
    per: dict[str, list[float]] = {}
    for r in rows:
        if (r["protocol"] == protocol and r["seed"] == seed and r["model"] == model and r["method"] in methods
                and r["method"] not in ("paragon", "none")):
            per.setdefault(r["method"], []).append(r["recall_at_1"])
    return sorted(per, key=lambda m: -statistics.mean(per[m]))[:count]


def acceptance(summary: list[dict], rows: list[dict], probes: dict) -> dict:
    out: dict = {}
    for protocol, limit in (("closed_set", GAP_CLOSED), ("open_set", GAP_OPEN)):
        cands = [s for s in summary if s["protocol"] == protocol and (s["flops_reduction"] or 0) >= MIN_FLOPS_REDUCTION
                 and s["method"] != "none"]
        if not cands:
            continue
        best = max(cands, key=lambda s: s["recall_at_1_mean"])
        out[protocol] = {"best": f"{best['model']} / {best['method']}", "seeds": best["seeds"],
                         "recall_at_1_mean": round(best["recall_at_1_mean"], 4), "gap_points": best["gap_points"],
                         "limit_points": -100 * limit, "within_limit": bool(best["gap_points"] >= -100 * limit),
                         "compatible_m_qg_gt_m_qq": best["compatible"],
                         "flops_reduction": best["flops_reduction"]}
        by = {(s["method"], s["model"]): s for s in summary if s["protocol"] == protocol}
        nas = by.get((best["method"], "cmpnas"))
        hand = by.get((best["method"], "shufflenetv2_x0_5"))  # the hand-designed net at <= the searched net's FLOPs
        if nas and hand:
            out[protocol]["searched_net_vs_shufflenetv2"] = {
                "cmpnas": round(nas["recall_at_1_mean"], 4), "shufflenetv2_x0_5": round(hand["recall_at_1_mean"], 4),
                "searched_at_least_as_good": bool(nas["recall_at_1_mean"] >= hand["recall_at_1_mean"])}
    if probes.get("none"):
        out["throughput_vs_independent"] = {m: round(v / probes["none"], 3) for m, v in probes.items()}
        out["throughput_ok"] = {m: bool(v / probes["none"] >= SPEED_RATIO) for m, v in probes.items()
                                if uses_bank(m) and m != "none"}
    return out


def write(args, rows: list[dict], probes: dict, timings: dict, protocol: dict, probe_settings: str = "") -> None:
    rows = sorted(rows, key=lambda r: (r["protocol"], r["method"] != "paragon", r.get("model", ""), r["method"], r["seed"]))
    summary = summarise(rows)
    checks = acceptance(summary, rows, probes)
    paragon = {r["protocol"]: r for r in rows if r["method"] == "paragon"}
    for r in rows:
        p = paragon.get(r["protocol"])
        r["gap_to_paragon_recall_at_1"] = r["recall_at_1"] - p["recall_at_1"] if p else None
        r["compatible"] = None if r["method"] == "paragon" else bool(r["recall_at_1"] > r["homo_recall_at_1"])
    name = "gallery_aware_quick" if args.quick else "gallery_aware"
    columns = ["protocol", "method", "model", "seed", "epochs", "recall_at_1", "map_at_r", "homo_recall_at_1",
               "gap_to_paragon_recall_at_1", "compatible", "query_mflops", "train_img_per_s", "train_seconds"]
    notes = ("recall_at_1 / map_at_r: heterogeneous M(q, g) with g the protocol's gallery model (closed set: the "
             "paragon; open set: the gallery trained on the 5 training classes), on the test protocol (closed set: "
             "test queries vs the whole training split; open set: the 5 held-out classes' test images, each query "
             "vs the others); homo_recall_at_1: M(q, q). train_img_per_s: median over epochs 2.. of the training "
             "log of the call that trained the row (its --jobs trainings at once, its --threads, and whatever else "
             "ran on the machine: see each row's command; rows of different calls are not comparable, the probe "
             "is).\n\n"
             "Mean over seeds:\n\n")
    from hetsearch.utils.results import markdown_table

    notes += markdown_table(summary, ["protocol", "method", "model", "seeds", "recall_at_1_mean", "recall_at_1_std",
                                      "homo_recall_at_1_mean", "map_at_r_mean", "gap_points", "flops_reduction",
                                      "compatible"])
    if probes:
        notes += "\nThroughput probe (ShuffleNetV2 x0.5, one training at a time, images/s): " + ", ".join(
            f"{m} {v:.0f}" + (f" ({v / probes['none']:.2f}x)" if probes.get("none") else "") for m, v in probes.items())
        if args.probe_steps == 0:
            notes += f" (not rerun by this call: stored by an earlier call, settings {probe_settings})"
    notes += f"\n\nChecks: {json.dumps(checks)}"
    commands = sorted({r["command"] for r in rows if r.get("command")})
    if commands:
        notes += "\n\nCommands that trained the rows (each row's `command`):\n\n" + "\n".join(f"- `{c}`" for c in commands)
    write_results(name, protocol=protocol, rows=rows, timings_s=timings, columns=columns,
                  title="Gallery-aware compatibility: query models vs the gallery's own embeddings (closed and open set)",
                  notes=notes, extra={"summary": summary, "acceptance": checks, "throughput_probe_img_per_s": probes,
                                      "probe_settings": probe_settings, "epochs": args.epochs,
                                      "seeds": sorted({r["seed"] for r in rows if r["method"] != "paragon"}),
                                      "methods": sorted({r["method"] for r in rows if r["method"] != "paragon"}),
                                      "models": sorted({r["model"] for r in rows if r["method"] != "paragon"})})


# ----------------------------------------------------------------------------- main

def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    runs = Path(args.runs)
    rows_dir = runs / ("ga_rows_quick" if args.quick else "ga_rows")
    rows_dir.mkdir(parents=True, exist_ok=True)
    state_path = runs / ("ga_state_quick.json" if args.quick else "ga_state.json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    timings: dict = dict(state.get("build_timings", {}))  # galleries and banks: kept from the call that built them
    # throughput probes depend on the query-model settings: kept per settings, reused only for the same
    settings = json.dumps({"probe": 2, "set": args.set, "steps": args.probe_steps, "device": args.device,
                           "threads": args.threads})
    if args.probe_steps == 0:  # no probe this call: report the stored ones
        probes, probe_settings = stored_probes(state, settings)
    else:
        probes, probe_settings = state.setdefault("probes_by_settings", {}).setdefault(settings, {}), settings

    def save_state() -> None:
        atomic_write_json(state_path, state)

    def load_rows(grid_only: bool = False) -> list[dict]:
        """Finished rows of this protocol (see same_protocol); grid_only: only this call's methods/models/seeds."""
        load_paragons()
        rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
        galleries = {p: r["query_model"] for p, r in paragons.items()}
        rows = [r for r in rows if same_protocol(r, args, galleries)]
        if grid_only:
            rows = [r for r in rows if r["method"] in args.methods and r["model"] in args.models
                    and r["seed"] in args.seeds]
        return rows

    protocol_desc = {"protocols": ", ".join(args.protocols), "query_epochs": args.epochs,
                     "seeds": ", ".join(map(str, args.seeds)),
                     "caps": (f"{QUICK['max_train_items']} training / {QUICK['max_test_items']} test items"
                              if args.quick else "none (Fashion-MNIST 60k / 10k)"),
                     "open_set": "gallery and query models trained on 5 classes, scored on the other 5",
                     "bn_recalibration_batches": args.bn_recalibration}

    paragons: dict[str, dict] = {}

    def load_paragons() -> None:
        for p in PROTOCOLS:  # every protocol with a gallery: a call with one --protocols keeps the other's rows
            if p not in paragons and (gallery_config(args, p).run_dir / "model.pt").is_file():
                paragons[p] = paragon_row(args, p, state.setdefault("paragon_rows", {}))
                save_state()

    def report() -> None:
        rows = load_rows()
        timings["this_call_wall"] = round(time.perf_counter() - started, 1)
        protocol_desc["protocols"] = ", ".join(p for p in PROTOCOLS if p in paragons)
        protocol_desc["seeds"] = ", ".join(map(str, sorted({r["seed"] for r in rows}))) or protocol_desc["seeds"]
        write(args, [*paragons.values(), *rows], probes, timings, protocol_desc, probe_settings)

    if args.report_only:
        report()
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads or 1))
    pool = ProcessPoolExecutor(max_workers=args.jobs, mp_context=__import__("multiprocessing").get_context("spawn")) \
        if args.jobs > 1 else None

    def run_all(fn, items: list) -> list:
        """fn over items, in the pool when there is one; `on_done` per finished item."""
        if pool is None:
            out = []
            for item in items:
                out.append(fn(item))
                yield out[-1]
            return
        futures = {pool.submit(fn, item): item for item in items}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    yield f.result()
                except Exception as exc:  # one failed run must not stop the others
                    item = futures[f]
                    name = getattr(item.get("cfg") if isinstance(item, dict) else item, "name", "?")
                    print(f"[gallery_aware] FAILED {name}: {type(exc).__name__}: {exc}", flush=True)
                    state.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"
                    save_state()

    # 1. galleries (in parallel when possible)
    t = time.perf_counter()
    for info in run_all(train_gallery, [gallery_config(args, p) for p in args.protocols]):
        timings[f"train_{info['name']}"] = round(info["train_seconds"], 1)
        state.setdefault("build_timings", {})[f"train_{info['name']}"] = round(info["train_seconds"], 1)
        print(f"[gallery_aware] gallery {info['name']} ready ({info['train_seconds']:.0f} s of training)", flush=True)
    timings["galleries_wall_this_call"] = round(time.perf_counter() - t, 1)
    save_state()

    # 2. banks (in this process: one build per gallery, before any query model needs it)
    bank_methods = [m for m in args.methods if uses_bank(m)]
    if bank_methods:
        for protocol in args.protocols:
            t = time.perf_counter()
            summary = build_bank_for(query_config(args, protocol, args.models[0], bank_methods[0], 0))
            timings[f"bank_{protocol}_this_call"] = round(time.perf_counter() - t, 1)
            timings[f"bank_{protocol}_build"] = state.setdefault("build_timings", {})[f"bank_{protocol}_build"] = \
                summary.get("build_seconds")
            state.setdefault("banks", {})[protocol] = summary
            print(f"[gallery_aware] bank {protocol}: {summary}", flush=True)
        save_state()

    # 3. throughput probe (alone on the device)
    if "closed_set" in args.protocols and args.probe_steps > 0:
        for method in args.methods:
            if method not in probes:
                probes[method] = probe(args, method)
                print(f"[gallery_aware] probe {method}: {probes[method]:.0f} img/s", flush=True)
                save_state()

    # 4. query models: seed 0 for every method, then the other seeds for the best two methods per protocol
    def jobs_for(seed: int, methods_of: dict[str, list[str]], models: list[str]) -> list[dict]:
        jobs = []
        for model in models:
            for method_index in range(max(len(v) for v in methods_of.values())):
                for protocol in args.protocols:
                    methods = methods_of[protocol]
                    if method_index >= len(methods):
                        continue
                    method = methods[method_index]
                    cfg = query_config(args, protocol, model, method, seed)
                    if (rows_dir / f"{cfg.name}.json").is_file():
                        continue
                    jobs.append({"cfg": cfg, "protocol": protocol, "model": model, "method": method, "seed": seed,
                                 "rows_dir": str(rows_dir), "settings": row_settings(args)})
        return jobs

    def train_jobs(jobs: list[dict]) -> None:
        for row in run_all(train_and_score, jobs):
            print(f"[gallery_aware] {row['run']}: M(q,g) {row['recall_at_1']:.4f}, M(q,q) {row['homo_recall_at_1']:.4f}, "
                  f"{row['train_img_per_s']} img/s", flush=True)
            report()

    # in phases, so that a run cut short has the most telling results first: the first model with
    # every method (seed 0), then its other seeds for the two best methods per protocol (chosen on
    # that model's seed-0 results, then kept), then the other models the same way
    seed_models = [m for m in args.models if m in args.seed_models]
    groups = [args.models[:1], args.models[1:]]
    best: dict[str, list[str]] = {}
    for number, group in enumerate(groups):
        if not group:
            continue
        t = time.perf_counter()
        train_jobs(jobs_for(args.seeds[0], {p: list(args.methods) for p in args.protocols}, group))
        timings[f"seed0_wall_{number}"] = round(time.perf_counter() - t, 1)
        if not best:  # chosen once, on the first model's first-seed results
            rows = load_rows(grid_only=True)
            best = {p: best_methods(rows, p, args.methods, args.models[0], args.seeds[0]) for p in args.protocols}
        state["best_methods"] = best
        save_state()
        t = time.perf_counter()
        for seed in args.seeds[1:]:
            train_jobs(jobs_for(seed, best, [m for m in group if m in seed_models]))
        timings[f"other_seeds_wall_{number}"] = round(time.perf_counter() - t, 1)
        save_state()
    report()
    if pool is not None:
        pool.shutdown()
    name = "gallery_aware_quick" if args.quick else "gallery_aware"
    print(open(_shared.ROOT / "docs" / "results" / f"{name}.md").read())


if __name__ == "__main__":
    main()
