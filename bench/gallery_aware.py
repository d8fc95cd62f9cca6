"""Gallery-aware compatibility (issues 15, 20): query models trained against the gallery's own
embeddings vs BCT, closed and open set, every choice made on validation, test scored once per
final configuration. Runs on the experiment runner (bench/runner.py; protocols in bench/protocols.py).

Phases (each call continues where the last stopped; a finished run is never redone):
  1. galleries: per protocol and phase, the paragon recipe (configs/fashion_mnist/gallery.yaml) on
     the protocol's data: closed set one gallery (runs/bench/gallery, shared with the other
     benches); open set the 5-class gallery (final) and, for selection, one trained without the
     --val-classes validation classes. Rows: M(g, g) on validation (select) and test (final).
  2. select: every --methods candidate (variants METHOD@KEY=VALUE&...) x every --epochs, on the
     --select-models, seed --select-seed, scored on the VALIDATION split only (closed set: held-out
     training images against the training images; open set: --val-classes training classes held
     out of training, each of their images against the others). Per protocol, the candidate with
     the best mean validation M(q, g) Recall@1 (then MAP@R) is chosen.
  3. final: the chosen (method, epochs) and the --reference methods (BCT, the paper's) at the
     chosen epochs, every --models, every --seeds, scored on TEST. Test numbers exist only here.
Each finished run writes runs/.../<prefix>_rows/<run>.json; docs/results/<results>.{json,md} are
rewritten after every run (final rows; candidates with their validation numbers under
"selection"), so a call cut short leaves its results.

    python bench/gallery_aware.py --quick                 # ~2 min on CPU: checks the machinery
    python bench/gallery_aware.py --jobs 2 --epochs 30 --seeds 0,1,2     # the campaign (hours)
    python bench/gallery_aware.py --phase select          # candidates only
    python bench/gallery_aware.py --report-only           # rewrite the results from finished rows
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from pathlib import Path

import _shared
import protocols as P
from runner import Run, Runner, grid, select_best

from hetsearch.utils.results import markdown_table, write_results

# candidates of the select phase: "...@train.task_loss=none" is label-free; τ variants of the
# InfoNCE temperature (0.05 vs the default 0.1) are candidates like any other
DEFAULT_METHODS = ("l2", "contrastive", "contrastive+relational", "bct+contrastive",
                   "contrastive+relational@train.task_loss=none",
                   "contrastive+relational@train.task_loss=none&compat.gallery_aware.temperature=0.05")
QUICK = {"caps": ("data.max_train_items=2000", "data.max_test_items=400"), "gallery_epochs": 1, "epochs": "1",
         "methods": "l2,contrastive+relational@train.task_loss=none", "models": "shufflenetv2_x0_5", "seeds": "0,1"}
GAP_LIMIT = {"closed_set": 0.015, "open_set": 0.05, "open_set_map": 0.05, "open_set_refresh": 0.02}   # issue 20 acceptance
MIN_FLOPS_REDUCTION = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,000 training / 400 test images, 1-epoch models, "
                                                        "2 candidates, 2 seeds (checks that it runs)")
    p.add_argument("--protocols", default="closed_set,open_set", help=f"of {', '.join(sorted(P.PROTOCOLS))}")
    p.add_argument("--models", default=None, help="query models (default shufflenetv2_x0_5,cmpnas; of "
                                                  f"{', '.join(P.MODELS)})")
    p.add_argument("--select-models", default=None, help="models the candidates are scored with (default: the "
                                                         "first of --models)")
    p.add_argument("--methods", default=None, help="candidate compat methods (default "
                                                   f"{','.join(DEFAULT_METHODS)})")
    p.add_argument("--extra-methods", action="append", default=[], metavar="PROTOCOL=METHODS",
                   help="more candidates (comma-separated) for one protocol only, e.g. probes of the open set")
    p.add_argument("--reference", default="bct", help="methods trained in the final phase besides the chosen one "
                                                      "(default bct, the paper's; '' for none)")
    p.add_argument("--epochs", default=None, help="candidate query epochs, comma-separated (default 30)")
    p.add_argument("--seeds", default=None, help="final-phase seeds (default 0,1,2)")
    p.add_argument("--select-seed", type=int, default=0, help="seed of the select phase (default 0)")
    p.add_argument("--select-metric", choices=("recall_at_1", "map_at_r"), default="recall_at_1",
                   help="validation M(q, g) metric the choice maximises (the other breaks ties)")
    p.add_argument("--val-classes", type=float, default=2, help="open set, select phase: training classes held "
                                                                "out as validation classes (data.val_classes)")
    p.add_argument("--phase", choices=("select", "final"), default="final", help="stop after this phase")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one process each (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default 1 with --jobs > 1)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: auto)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (data.root)")
    p.add_argument("--gallery-epochs", type=int, default=None, help="gallery epochs (default: the paragon's 15)")
    p.add_argument("--bn-recalibration", type=int, default=20, help="train.bn_recalibration_batches (0: off)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of every query model")
    p.add_argument("--cmpnas-arch", action="append", default=[], metavar="PROTOCOL=ARCH",
                   help="the searched net per protocol (default: the closed-set search of docs/results/gap.json)")
    p.add_argument("--runs", default=None, help="runs folder (default runs/bench; quick runs/bench_ga_quick)")
    p.add_argument("--results", default=None,
                   help="results name (default gallery_aware; quick gallery_aware_runner_quick)")
    p.add_argument("--report-only", action="store_true", help="rewrite the results from finished rows only")
    args = p.parse_args(argv)
    q = args.quick
    args.protocols = [P.get_protocol(x).name for x in args.protocols.split(",")]
    args.models = (args.models or (QUICK["models"] if q else "shufflenetv2_x0_5,cmpnas")).split(",")
    bad = sorted(set(args.models) - set(P.MODELS))
    if bad:
        raise SystemExit(f"unknown model(s) {bad}; known: {', '.join(P.MODELS)}")
    args.select_models = args.select_models.split(",") if args.select_models else args.models[:1]
    args.methods = (args.methods or (QUICK["methods"] if q else ",".join(DEFAULT_METHODS))).split(",")
    args.reference = [m for m in args.reference.split(",") if m]
    args.extra_methods = _extra_methods(p, args.extra_methods)
    args.epochs = [int(e) for e in (args.epochs or (QUICK["epochs"] if q else "30")).split(",")]
    args.seeds = [int(s) for s in (args.seeds or (QUICK["seeds"] if q else "0,1,2")).split(",")]
    args.gallery_epochs = args.gallery_epochs or (QUICK["gallery_epochs"] if q else None)
    args.threads = args.threads or (1 if args.jobs > 1 else None)
    args.runs = args.runs or (f"{_shared.BENCH_RUNS}_ga_quick" if q else _shared.BENCH_RUNS)
    args.results = args.results or ("gallery_aware_runner_quick" if q else "gallery_aware")
    return args


def _extra_methods(parser, items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        protocol, _, methods = item.partition("=")
        if protocol not in P.PROTOCOLS or not methods:
            parser.error(f"--extra-methods {item!r}: expected PROTOCOL=METHOD[,METHOD...] with PROTOCOL one of "
                         f"{', '.join(sorted(P.PROTOCOLS))}")
        out.setdefault(protocol, []).extend(m for m in methods.split(",") if m)
    return out


def methods_for(args, protocol: str) -> list[str]:
    """The candidates of one protocol: --methods, then its --extra-methods."""
    return list(dict.fromkeys([*args.methods, *args.extra_methods.get(protocol, [])]))


def settings_of(args) -> P.Settings:
    return P.Settings(runs=args.runs, caps=QUICK["caps"] if args.quick else (), data_dir=args.data_dir,
                      device=args.device, threads=args.threads, gallery_epochs=args.gallery_epochs,
                      bn_recalibration=args.bn_recalibration, overrides=tuple(args.set), val_classes=args.val_classes,
                      cmpnas_arch=tuple(tuple(a.split("=", 1)) for a in args.cmpnas_arch))


# ----------------------------------------------------------------------------- the runs of each phase

def gallery_runs(settings: P.Settings, protocols: list[str], phase: str) -> list[Run]:
    out = []
    for name in protocols:
        protocol = P.get_protocol(name)
        cfg = protocol.gallery(settings, protocol, phase)
        out.append(Run(name, "gallery", "paragon", cfg.runtime.seed, cfg.train.epochs, phase, settings.tag()))
    return out


def gallery_batches(settings: P.Settings, protocols: list[str]) -> list[list[Run]]:
    """The gallery runs of both phases in two batches, the first training each gallery once (the
    closed set's phases share one; a protocol with gallery_of shares another's), the second reusing."""
    batches: list[list[Run]] = [[], []]
    seen: set[str] = set()
    for phase in ("final", "select"):
        for run in gallery_runs(settings, protocols, phase):
            name = P.gallery_run_name(settings, P.get_protocol(run.protocol), phase)
            batches[name in seen].append(run)
            seen.add(name)
    return batches


def tagged(settings: P.Settings, runs: list[Run]) -> list[Run]:
    return [dataclasses.replace(r, tag=P.run_tag(settings, r.protocol, r.model)) for r in runs]


def select_runs(args, settings: P.Settings) -> list[Run]:
    return tagged(settings, [run for protocol in args.protocols for run in grid(
        [protocol], args.select_models, methods_for(args, protocol), [args.select_seed], args.epochs, "select")])


def choose(args, rows: list[dict]) -> dict[str, dict]:
    """Per protocol whose candidates have all finished: the chosen (method, epochs) and every
    candidate's validation numbers. Reads val_* metrics only (select_best refuses others)."""
    out = {}
    rows = [r for r in rows if r["phase"] == "select" and (r["method"] == "paragon" or (
        r["method"] in methods_for(args, r["protocol"]) and r["epochs"] in args.epochs
        and r["model"] in args.select_models and r["seed"] == args.select_seed))]  # this call's candidates
    for protocol in args.protocols:
        cands = [r for r in rows if r["protocol"] == protocol and r["method"] != "paragon"]
        if len(cands) < len(methods_for(args, protocol)) * len(args.epochs) * len(args.select_models):
            continue
        other = "map_at_r" if args.select_metric == "recall_at_1" else "recall_at_1"
        (method, epochs), table = select_best(cands, metric=f"val_{args.select_metric}", tie_break=f"val_{other}")
        paragon = next((r for r in rows if r["protocol"] == protocol and r["method"] == "paragon"), {})
        out[protocol] = {"method": method, "epochs": epochs,
                         "metric": f"val_{args.select_metric} (M(q, g) on validation)",
                         "models": args.select_models, "seed": args.select_seed,
                         "paragon_val_recall_at_1": paragon.get("val_recall_at_1"),
                         "candidates": [{"method": t["candidate"][0], "epochs": t["candidate"][1],
                                         "val_recall_at_1": t["val_recall_at_1"], "val_map_at_r": t["val_map_at_r"],
                                         "val_homo_recall_at_1": _mean(cands, t["candidate"], "val_homo_recall_at_1")}
                                        for t in table]}
    return out


def _mean(rows: list[dict], candidate: tuple, key: str) -> float | None:
    values = [r[key] for r in rows if (r["method"], r["epochs"]) == candidate and r.get(key) is not None]
    return statistics.mean(values) if values else None


def final_runs(args, settings: P.Settings, chosen: dict[str, dict]) -> list[Run]:
    runs = []
    for protocol, c in chosen.items():
        methods = list(dict.fromkeys([c["method"], *args.reference]))
        runs += tagged(settings, grid([protocol], args.models, methods, args.seeds, [c["epochs"]], "final"))
    return sorted(runs, key=lambda r: (r.seed, r.protocol, r.model, r.method))  # every configuration's seed 0 first


# ----------------------------------------------------------------------------- the results

def summarise(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (protocol, method, model, epochs), with the paragon's gap."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["method"] != "paragon":
            groups.setdefault((r["protocol"], r["method"], r["model"], r["epochs"]), []).append(r)
    paragon = {r["protocol"]: r for r in rows if r["method"] == "paragon"}
    out = []
    for (protocol, method, model, epochs), rs in sorted(groups.items()):
        het, homo, p = [r["recall_at_1"] for r in rs], [r["homo_recall_at_1"] for r in rs], paragon.get(protocol)
        mean = statistics.mean(het)
        out.append({"protocol": protocol, "method": method, "model": model, "epochs": epochs, "seeds": len(rs),
                    "recall_at_1_mean": mean, "recall_at_1_std": statistics.pstdev(het),
                    "homo_recall_at_1_mean": statistics.mean(homo), "homo_recall_at_1_std": statistics.pstdev(homo),
                    "map_at_r_mean": statistics.mean(r["map_at_r"] for r in rs),
                    "gap_points": round(100 * (mean - p["recall_at_1"]), 2) if p else None,
                    "flops_reduction": round(p["query_mflops"] / rs[0]["query_mflops"], 1) if p else None,
                    "compatible": bool(mean > statistics.mean(homo)),
                    "m_qg_minus_m_qq_points": round(100 * (mean - statistics.mean(homo)), 2),
                    # how much better the gallery searches than the query model's own index: M(q, g) > M(q, q)
                    # asks M(q, g) to land within this many points of M(g, g) (near 0: only a tie with it passes)
                    "gallery_lead_points": round(100 * (p["recall_at_1"] - statistics.mean(homo)), 2) if p else None})
    return out


def acceptance(summary: list[dict], chosen: dict[str, dict]) -> dict:
    """Issue 20's checks on the chosen method of each protocol (means over seeds)."""
    out = {}
    for protocol, c in chosen.items():
        mine = [s for s in summary if s["protocol"] == protocol and s["method"] == c["method"]]
        out[protocol] = {s["model"]: {
            "seeds": s["seeds"], "gap_points": s["gap_points"], "limit_points": -100 * GAP_LIMIT.get(protocol, 0),
            "within_limit": s["gap_points"] is not None and s["gap_points"] >= -100 * GAP_LIMIT.get(protocol, 0),
            "m_qg_gt_m_qq": s["compatible"], "m_qg_minus_m_qq_points": s["m_qg_minus_m_qq_points"],
            "gallery_lead_points": s["gallery_lead_points"], "flops_reduction": s["flops_reduction"],
            "flops_ok": (s["flops_reduction"] or 0) >= MIN_FLOPS_REDUCTION} for s in mine}
    return out


def report(args, runner: Runner, started: float) -> Path:
    """Rewrite docs/results/<results>.{json,md} from the finished rows of this call's settings."""
    settings = settings_of(args)
    rows = [r for r in runner.rows() if r["protocol"] in args.protocols and r.get("settings_tag", "") == settings.tag()
            and (r["method"] == "paragon" or r["tag"] == P.run_tag(settings, r["protocol"], r["model"]))]
    finals = [r for r in rows if r["phase"] == "final"]
    galleries = {r["protocol"]: r["gallery_model"] for r in finals if r["method"] == "paragon"}
    finals = [r for r in finals if galleries.get(r["protocol"]) == r["gallery_model"]]  # the current galleries
    chosen = choose(args, [r for r in rows if r["phase"] == "select"])
    paragon = {r["protocol"]: r for r in finals if r["method"] == "paragon"}
    for r in finals:
        p = paragon.get(r["protocol"])
        r["gap_to_paragon_recall_at_1"] = r["recall_at_1"] - p["recall_at_1"] if p else None
        r["compatible"] = None if r["method"] == "paragon" else bool(r["recall_at_1"] > r["homo_recall_at_1"])
        r["chosen"] = r["method"] == chosen.get(r["protocol"], {}).get("method")
    finals.sort(key=lambda r: (r["protocol"], r["method"] != "paragon", r["model"], r["method"], r["seed"]))
    summary = summarise(finals)
    checks = acceptance(summary, chosen)
    timings = {"this_call_wall": round(time.perf_counter() - started, 1),
               "train_seconds_select": round(sum(r.get("train_seconds") or 0 for r in rows if r["phase"] == "select")),
               "train_seconds_final": round(sum(r.get("train_seconds") or 0 for r in finals))}
    return write_results(args.results, protocol=_protocol_text(args), rows=finals, timings_s=timings, columns=COLUMNS,
                  title="Gallery-aware compatibility: chosen on validation, scored on test (closed and open set)",
                  notes=_notes(summary, chosen, checks, runner),
                  extra={"selection": chosen, "summary": summary, "acceptance": checks, "failures": runner.failures,
                         "epochs": args.epochs, "seeds": args.seeds, "candidates": {p: methods_for(args, p) for p in args.protocols},
                         "reference": args.reference, "models": args.models, "quick": args.quick})[1]


COLUMNS = ["protocol", "method", "model", "seed", "epochs", "recall_at_1", "map_at_r", "homo_recall_at_1",
           "gap_to_paragon_recall_at_1", "compatible", "query_mflops", "train_seconds", "git_revision"]


def _protocol_text(args) -> dict:
    return {**{name: P.get_protocol(name).description.replace("{val_classes}", f"{args.val_classes:g}")
               for name in args.protocols},
            "selection": "candidates scored on the validation split only; test scored once per final configuration",
            "caps": ", ".join(QUICK["caps"]) if args.quick else "none (Fashion-MNIST 60k / 10k)",
            "bn_recalibration_batches": args.bn_recalibration, "set": args.set}


def _notes(summary: list[dict], chosen: dict, checks: dict, runner: Runner) -> str:
    lines = ["recall_at_1 / map_at_r: M(q, g) on the test split; homo_recall_at_1: M(q, q). Mean over seeds:", "",
             markdown_table(summary, ["protocol", "method", "model", "epochs", "seeds", "recall_at_1_mean",
                                      "recall_at_1_std", "homo_recall_at_1_mean", "gap_points", "flops_reduction",
                                      "compatible", "m_qg_minus_m_qq_points", "gallery_lead_points"]), "",
             "gallery_lead_points: M(g, g) minus the query model's own M(q, q), in points: how much better the "
             "gallery model searches than the query model alone; M(q, g) > M(q, q) asks M(q, g) to land within "
             "that many points of M(g, g)."]
    for protocol, c in chosen.items():
        lines += [f"Selection, {protocol} (on validation; {c['models']} seed {c['seed']}; paragon val Recall@1 "
                  f"{c['paragon_val_recall_at_1']}): chosen {c['method']} at {c['epochs']} epochs", "",
                  markdown_table(c["candidates"], ["method", "epochs", "val_recall_at_1", "val_map_at_r",
                                                   "val_homo_recall_at_1"])]
    lines.append(f"Acceptance (chosen method): {checks}")
    if runner.failures:
        lines.append(f"Failed runs (rerun the command to retry): {runner.failures}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def prepare_banks(settings: P.Settings, runner: Runner, runs: list[Run]) -> None:
    """Build, in this process, each bank the unfinished runs will open (before parallel runs do)."""
    seen = set()
    for run in runs:
        key = (run.protocol, P.get_protocol(run.protocol).phase_tag(run.phase), run.method)
        if P.uses_bank(run.method) and runner.finished(run) is None and key not in seen:
            seen.add(key)
            print(f"[gallery_aware] bank {run.protocol} {run.phase}: {P.build_bank(settings, run)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    settings = settings_of(args)
    runner = Runner(Path(args.runs) / f"{settings.prefix}_rows", functools.partial(P.run_job, settings),
                    jobs=args.jobs, threads=args.threads, on_row=lambda row: report(args, runner, started))
    if not args.report_only:
        for batch in gallery_batches(settings, args.protocols):
            runner.run(batch)
        paragons = runner.run(gallery_runs(settings, args.protocols, "select"))  # finished: their rows
        runs = select_runs(args, settings)
        prepare_banks(settings, runner, runs)
        chosen = choose(args, paragons + runner.run(runs))
        for protocol in args.protocols:
            c = chosen.get(protocol)
            print(f"[gallery_aware] {protocol}: " + (f"chose {c['method']} at {c['epochs']} epochs on validation" if c
                  else "not every candidate finished (see the failures above): no final phase; rerun"), flush=True)
        if args.phase == "final":
            runs = final_runs(args, settings, chosen)
            prepare_banks(settings, runner, runs)
            runner.run(runs)
    print(report(args, runner, started).read_text())


if __name__ == "__main__":
    main()
