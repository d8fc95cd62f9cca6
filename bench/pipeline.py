"""Issue 4 benchmark: `hetsearch pipeline` end to end, one command per profile, timed.

Runs the full profile (configs/fashion_mnist/pipeline.yaml: paragon → BCT light models →
CMP-NAS supernet → search → retrain → compatibility grid) and the quick profile
(pipeline_quick.yaml, the README's main job) from empty output folders of their own
(runs/bench_pipeline, runs/bench_pipeline_quick; removed first unless --reuse), so every stage
really runs and the wall time is the whole job. Rows: every (query model, gallery model) pair of
the full profile's grid. Writes docs/results/pipeline.{json,md}.

    python bench/pipeline.py                 # both profiles (~35 min on 2 cores)
    python bench/pipeline.py --skip-full     # quick profile only
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import _shared
import torch

from hetsearch.pipeline import load_pipeline_config, run_pipeline
from hetsearch.utils.results import write_results

PROFILES = {"full": ("pipeline.yaml", "runs/bench_pipeline", 45 * 60),
            "quick": ("pipeline_quick.yaml", "runs/bench_pipeline_quick", 5 * 60)}   # config, folder, limit s


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-full", action="store_true", help="only the quick profile")
    parser.add_argument("--reuse", action="store_true",
                        help="keep finished stages from an earlier run (then the wall time is not end to end)")
    parser.add_argument("--device", default=None, help="runtime.device (default: auto)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite docs/results/pipeline.* from the finished runs and the wall times "
                             "recorded in docs/results/pipeline.json (runs nothing)")
    return parser.parse_args()


def run_profile(profile: str, args: argparse.Namespace) -> dict:
    config, output_dir, limit_s = PROFILES[profile]
    if not args.reuse and Path(output_dir).exists():
        shutil.rmtree(output_dir)   # the bench's own scratch folder: every stage must run
    overrides = [f"output_dir={output_dir}", *([f"runtime.device={args.device}"] if args.device else [])]
    cfg = load_pipeline_config(_shared.CONFIGS / config, overrides)
    started = time.perf_counter()
    ctx = run_pipeline(cfg, log=lambda line: print(line, flush=True))
    wall = time.perf_counter() - started
    return {"profile": profile, "config": f"configs/fashion_mnist/{config}", "output_dir": output_dir,
            "wall_s": round(wall, 1), "limit_s": limit_s, "within_limit": bool(wall <= limit_s),
            "end_to_end": not args.reuse, "stage_s": dict(ctx.timings_s), "protocol": ctx.splits.protocol}


def grid_rows(output_dir: str) -> list[dict]:
    grid = json.loads((Path(output_dir) / "grid" / "grid.json").read_text())
    gallery_stage = next(iter(json.loads((Path(output_dir) / "pipeline_summary.json").read_text())["models"]))
    info = {}
    for summary in Path(output_dir).glob("*/summary.json"):
        s = json.loads(summary.read_text())
        info[summary.parent.name] = {"train_seconds": round(s["train_seconds"], 1), "epochs": s["final"]["epoch"]}
    info[gallery_stage]["method"] = "paragon"   # the pipeline's gallery model is its paragon
    return _shared.grid_rows(grid, info)


def main() -> None:
    args = parse_args()
    measured_by = None
    if args.report_only:
        previous = json.loads(Path("docs/results/pipeline.json").read_text())
        profiles, measured_by = previous["profiles"], previous.get("timings_measured_by") or previous["command"]
        for p in profiles:
            p["protocol"] = json.loads((Path(p["output_dir"]) / "pipeline_summary.json").read_text())["protocol"]
    else:
        profiles = [run_profile("quick", args)]
        if not args.skip_full:
            profiles.append(run_profile("full", args))
    main_profile = profiles[-1]
    rows = grid_rows(main_profile["output_dir"])
    timings = {f"{p['profile']}_total": p["wall_s"] for p in profiles}
    timings.update({f"{main_profile['profile']}_{k}": v for k, v in main_profile["stage_s"].items()})
    checks = {f"{p['profile']}_within_{p['limit_s'] // 60}_min": p["within_limit"] for p in profiles}
    columns = ["method", "query_model", "gallery_model", "recall_at_1", "map_at_r", "compatible", "gap_to_paragon",
               "query_mflops", "gallery_mflops", "flops_ratio", "train_seconds", "epochs"]
    write_results("pipeline", protocol=main_profile["protocol"], rows=rows, timings_s=timings, columns=columns,
                  title=f"`hetsearch pipeline`, end to end ({main_profile['profile']} profile grid)",
                  notes=("Wall times: " + "; ".join(f"{p['profile']} profile ({p['config']}) {p['wall_s'] / 60:.1f} min "
                                                   f"(limit {p['limit_s'] // 60} min, end to end: {p['end_to_end']})"
                                                   for p in profiles)
                         + f". Checks: {json.dumps(checks)}. Rows: every pair of the grid; recall_at_1 is M(query, "
                         "gallery) on the test queries against the whole training split; gap_to_paragon is against "
                         "the profile's gallery model."),
                  extra={"profiles": [{k: v for k, v in p.items() if k != "protocol"} for p in profiles],
                         "acceptance": checks, **({"timings_measured_by": measured_by} if measured_by else {})})
    print(open("docs/results/pipeline.md").read())


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
