"""`compat.linear_map` (the map as the last step of training) against the bench's `open_set_map` protocol (an
index of the training images, then `hetsearch refresh epochs=0`), on the very query models the open-set
selection trained: the two must agree, since the templates now ship the first on the evidence of the second.

For each finished open-set select row of a query model (validation classes, never test): a copy of the model
gets the map as `hetsearch train ... compat.linear_map=true` ends (hetsearch.train.embedding_map: the
gallery's embeddings of a seeded sample of the training images, 10% held out), and is scored like the row
(M(q, g) of the validation classes, each against the others), beside the row itself (no map) and, where the
bench ran it, the `open_set_map` row of the same model.

    python bench/map_in_training.py                     # Fashion-MNIST, after bench/gallery_aware.py --protocols open_set_map
    python bench/map_in_training.py --runs runs/bench_photos --prefix ph --configs configs/cifar10 \
        --results map_in_training_photos                # CIFAR-10 photos (bench/photos.py's select runs)
Writes docs/results/<results>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import _shared
import protocols as P
from runner import Run, git_revision

from hetsearch.config import TrainRunConfig
from hetsearch.models import load_checkpoint
from hetsearch.train.embedding_map import apply_linear_map, training_map_targets
from hetsearch.utils.results import write_results
from hetsearch.utils.typed_config import load_config

COLUMNS = ["label", "recall_at_1", "bench_map_recall_at_1", "unmapped_recall_at_1", "kept", "bench_kept",
           "homo_recall_at_1", "query_mflops", "gallery_mflops"]


def open_set_rows(settings: P.Settings) -> list[tuple[dict, dict | None]]:
    """(open-set select row of a query model, the bench's open_set_map row of the same model or None)."""
    folder = Path(settings.runs) / f"{settings.prefix}_rows"
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("select_open_set_*.json"))]
    mapped = {r["mapped_from"]: r for r in rows if r["protocol"] == "open_set_map" and r.get("mapped_from")}
    return [(r, mapped.get(r["training_run"])) for r in rows if r["protocol"] == "open_set"
            and r.get("training_run") and r["method"] not in ("paragon", "search")]


def map_in_training(settings: P.Settings, row: dict, bench_map: dict | None, out: Path) -> dict:
    """The row's query model mapped by the training step, scored on validation like the row."""
    source = Path(settings.runs) / row["training_run"]
    cfg = load_config(TrainRunConfig, source / "config.yaml", [])
    target = out / row["training_run"] / "model.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copyfile(source / "model.pt", target)
    started = time.perf_counter()
    gallery = load_checkpoint(cfg.compat.gallery_model).model
    info = apply_linear_map(target, training_map_targets(P.splits_of(cfg).train, gallery, cfg.runtime.seed))
    seconds = time.perf_counter() - started
    open_set = P.get_protocol("open_set")
    run = Run("open_set", row["model"], row["method"], row["seed"], row["epochs"], "select", row.get("tag", ""))
    scores = P.score_pair(settings, open_set, run, target, Path(cfg.compat.gallery_model), "val")
    bench_map = bench_map or {}
    return {"method": row["method"], "label": row.get("candidate") or row["label"], "protocol": "open_set (validation classes)",
            "seed": row["seed"], "epochs": row["epochs"], "query_model": scores["query_model"],
            "gallery_model": scores["gallery_model"], "recall_at_1": scores["val_recall_at_1"],
            "map_at_r": scores["val_map_at_r"], "homo_recall_at_1": scores["val_homo_recall_at_1"],
            "query_mflops": scores["query_mflops"], "gallery_mflops": scores["gallery_mflops"],
            "bench_map_recall_at_1": bench_map.get("val_recall_at_1"), "unmapped_recall_at_1": row["val_recall_at_1"],
            "kept": info.get("applied"), "bench_kept": (bench_map.get("linear_map") or {}).get("applied"),
            "linear_map": info, "bench_linear_map": bench_map.get("linear_map"), "map_seconds": round(seconds, 1),
            "scored_on": scores["scored_on"], "git_revision": git_revision()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=_shared.BENCH_RUNS)
    p.add_argument("--prefix", default="ga", help="the bench's row prefix (<runs>/<prefix>_rows)")
    p.add_argument("--configs", default="", help="the bench's recipes (default configs/fashion_mnist)")
    p.add_argument("--methods", default=None, help="only these methods (comma-separated; default every row's)")
    p.add_argument("--results", default="map_in_training")
    args = p.parse_args(argv)
    settings = P.Settings(runs=args.runs, prefix=args.prefix, configs=args.configs)
    out = Path(args.runs) / "map_in_training"
    started = time.perf_counter()
    wanted = set(args.methods.split(",")) if args.methods else None
    rows = [map_in_training(settings, row, bench_map, out) for row, bench_map in open_set_rows(settings)
            if wanted is None or row["method"] in wanted]
    both = [r for r in rows if r["bench_kept"] is not None]
    agree = sum(r["kept"] == r["bench_kept"] for r in both)
    diffs = [abs(r["recall_at_1"] - r["bench_map_recall_at_1"]) for r in both]
    gains = [r["recall_at_1"] - r["unmapped_recall_at_1"] for r in rows]
    notes = (f"Validation M(q, g) with the map minus without: {', '.join(f'{100 * g:+.2f}' for g in gains)} points. "
             + (f"The gate kept or declined the map as the bench's protocol did for {agree} of {len(both)} models; "
                f"largest difference to the bench's map in validation M(q, g): {100 * max(diffs):.2f} points (the "
                "two fit on different seeded samples of the same training images)." if both else ""))
    write_results(args.results, protocol={
        "what": "compat.linear_map (the training step) vs the bench's open_set_map protocol (index of the training "
                "images + refresh epochs=0), the same query models; all figures on the open set's validation classes "
                "(each validation image against the others), never test",
        "rows_from": f"{args.runs}/{args.prefix}_rows/select_open_set_*.json"},
        rows=rows, timings_s={"total": round(time.perf_counter() - started, 1)}, columns=COLUMNS,
        title="The map as a step of training vs the bench's map protocol (open set, validation classes)", notes=notes,
        extra={"kept_agree": agree, "models": len(rows), "max_abs_diff_points": round(100 * max(diffs, default=0), 2)})


if __name__ == "__main__":
    main()
