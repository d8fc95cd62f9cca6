"""Issue 3 benchmark: compatibility by parameters (BCT) against the paragon, with its baselines.

Closed set (Fashion-MNIST; queries = test split, gallery = train split minus validation):
  the paragon (configs/fashion_mnist/gallery.yaml, shared with bench/baselines.py) and
  MobileNetV3-small x0.5 and ShuffleNetV2 x0.5 query models, each trained five ways against it:
  independent (no compatibility), BCT, BCT with class-mean rows (bct_mean), L2 regression and cosine
  distillation. The full compatibility grid of these 11 models is evaluated (Recall@1, MAP@R, mAP,
  TAR@FAR=1e-3).
Open set (the pseudo-classifier path): a gallery model trained on half of the classes, and
  MobileNetV3-small query models trained (BCT / bct_mean / independent) on 80% of the classes, a superset that
  contains 3 classes the gallery model never saw, whose frozen-classifier rows BCT fills with the
  gallery model's class means. Evaluated on the gallery protocol's 5 held-out classes (query =
  test split, gallery = the rest of the test split), also split into the classes the query model
  learned through pseudo-classifier rows and the classes no model was trained on.

Writes docs/results/bct.{json,md} (or bct_quick.* with --quick) through the shared results writer;
runs and grids in runs/bench[_quick]/ under the current folder, like every bench: run it from the
repository root.

    python bench/bct.py                  # full: paragon 15 epochs, light models 6 epochs (shared recipe)
    python bench/bct.py --epochs 10      # light models 10 epochs
    python bench/bct.py --quick          # minutes: subsets, 1 epoch (checks that it runs)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import _shared  # noqa: F401  (puts src/ on the path)
import torch

from hetsearch.eval.grid import run_grid
from hetsearch.data import Splits, make_splits
from hetsearch.train import train
from hetsearch.utils.results import markdown_table, write_results

METHODS = ("none", "bct", "bct_mean", "l2", "distill")
LABELS = {"none": "independent", "bct": "bct", "bct_mean": "bct_mean", "l2": "l2", "distill": "distill"}
OPEN_SET_METHODS = ("bct", "bct_mean", "none")
QUICK = ["data.max_train_items=3000", "data.max_test_items=500", "train.epochs=1"]
OPEN_SET_QUERY_FRACTION = 0.8
ACCEPT_GAP = 0.015   # BCT heterogeneous Recall@1 within 1.5 points of the paragon's homogeneous Recall@1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets and 1 epoch, to check the script")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"light-model epochs (default {_shared.LIGHT_EPOCHS}, the recipe shared with "
                             "bench/baselines.py so the independent runs are reused)")
    parser.add_argument("--device", default=None, help="runtime.device for training and evaluation (default: auto)")
    parser.add_argument("--skip-open-set", action="store_true", help="only the closed-set part")
    parser.add_argument("--open-set-gallery-epochs", type=int, default=8,
                        help="epochs of the open-set gallery model (the closed-set paragon has 15)")
    parser.add_argument("--baseline-models", default=",".join(_shared.LIGHT_MODELS),
                        help="light models that also get the l2 and distill baselines (each costs a frozen "
                             "gallery forward per batch)")
    parser.add_argument("--pairs", choices=("all", "first_gallery"), default="first_gallery",
                        help="all: full n x n grid; first_gallery (default): each model against the paragon and "
                             "itself, which is every pair the acceptance table needs")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated compatibility methods for the light models")
    return parser.parse_args()


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.runs, self.extra = _shared.runs_and_overrides(args, QUICK)
        self.epochs = args.epochs or _shared.LIGHT_EPOCHS
        self.device = args.device or "auto"
        self.timings: dict[str, float] = {}
        self.train_info: dict[str, dict] = {}   # run name -> method, backbone, train_seconds, epochs

    def fit(self, cfg, method: str, splits: Splits | None = None) -> Path:
        """Train (or reuse: resume=True returns at once for a finished run) and note its cost."""
        result = train(cfg, resume=True, splits=splits)
        self.train_info[cfg.name] = {"method": method, "train_seconds": round(result.train_seconds, 1),
                                     "epochs": cfg.train.epochs,
                                     "backbone": f"{cfg.model.backbone} {cfg.model.backbone_args or ''}".strip()}
        self.timings[f"train_{cfg.name}"] = round(result.train_seconds, 1)
        return result.model_path

    def light(self, model: str, method: str, gallery: Path, extra: list[str] = ()):
        overrides = [*self.extra, *extra]
        if method != "none":  # independent runs keep the shared recipe's null gallery (reused by baselines.py)
            overrides.append(f"compat.gallery_model={gallery}")
        return _shared.light_config(model, method, self.epochs, overrides)

    def grid(self, name: str, paths: list[Path], splits: Splits) -> dict:
        started = time.perf_counter()
        result = run_grid(paths, splits, Path(self.runs) / name, device=self.device, pairs_mode=self.args.pairs)
        self.timings[f"evaluate_{name}"] = round(time.perf_counter() - started, 1)
        return result

    def rows(self, grid: dict) -> list[dict]:
        return _shared.grid_rows(grid, self.train_info)

    # ------------------------------------------------------------------ closed set
    def closed_set(self) -> tuple[Splits, dict, str]:
        paragon_cfg = _shared.paragon_config(self.extra)
        splits = make_splits(paragon_cfg.data)
        paragon = self.fit(paragon_cfg, "paragon", splits)
        paths = [paragon]
        for model in _shared.LIGHT_MODELS:
            for method in self.args.methods.split(","):
                if method in ("l2", "distill") and model not in self.args.baseline_models.split(","):
                    continue
                paths.append(self.fit(self.light(model, method, paragon), LABELS[method], splits))
        return splits, self.grid("grid_closed_set", paths, splits), paragon_cfg.name

    # ------------------------------------------------------------------ open set
    def open_set(self) -> dict:
        gallery_cfg = _shared.paragon_config([*self.extra, "name=gallery_open_set", "data.protocol=open_set",
                                              f"train.epochs={1 if self.args.quick else self.args.open_set_gallery_epochs}"])
        splits = make_splits(gallery_cfg.data)
        gallery = self.fit(gallery_cfg, "paragon", splits)
        query_data = ["data.protocol=open_set", f"data.open_set_train_fraction={OPEN_SET_QUERY_FRACTION}"]
        model = _shared.LIGHT_MODELS[0]
        paths = [gallery]
        query_splits = None
        for method in OPEN_SET_METHODS:
            cfg = self.light(model, method, gallery, [f"name={model}_{LABELS[method]}_open_set", *query_data])
            query_splits = query_splits or make_splits(cfg.data)
            paths.append(self.fit(cfg, LABELS[method], query_splits))
        g_train, q_train = set(splits.train_classes), set(query_splits.train_classes)
        if not g_train < q_train:
            raise SystemExit(f"open set: the query model's training classes {sorted(q_train)} are not a superset of "
                             f"the gallery model's {sorted(g_train)}; the design needs them nested")
        names = lambda idx: [splits.classes[i] for i in sorted(idx)]  # noqa: E731
        pseudo = set(splits.test_classes) & (q_train - g_train)
        unseen = set(splits.test_classes) - q_train
        compat_summary = json.loads((paths[1 + OPEN_SET_METHODS.index("bct")].parent / "compat.json").read_text())
        groups = {"all held-out classes": set(splits.test_classes),
                  "new to the gallery model, learned by the query model (pseudo-classifier rows)": pseudo,
                  "unseen by both models": unseen}
        results = {}
        for i, (group, classes) in enumerate(groups.items()):
            sub = restrict(splits, sorted(classes))
            grid = self.grid(f"grid_open_set_{i}", paths, sub)
            results[group] = {"classes": names(classes), "protocol": sub.protocol, "rows": self.rows(grid)}
        return {"design": ("gallery model: open-set protocol, half of the classes; query models: open-set protocol "
                           f"with {OPEN_SET_QUERY_FRACTION:.0%} of the classes (same seed, so a superset of the "
                           "gallery's). Evaluated on the gallery protocol's held-out classes."),
                "gallery_train_classes": names(g_train), "query_train_classes": names(q_train),
                "pseudo_classifier_classes": compat_summary.get("pseudo_classes"), "groups": results}


def restrict(splits: Splits, classes: list[int]) -> Splits:
    """The same protocol with queries and gallery limited to `classes`."""
    keep = lambda s: s.subset(torch.isin(s.labels, torch.tensor(classes, dtype=torch.int64)))  # noqa: E731
    query = keep(splits.query)
    gallery = query if splits.gallery is splits.query else keep(splits.gallery)
    protocol = {**splits.protocol, "classes_evaluated": [splits.classes[c] for c in classes],
                "query": f"test-split images of {len(classes)} held-out classes ({len(query)} items)",
                "gallery": ("the same items, each query excluded from its own results" if gallery is query
                            else f"{len(gallery)} gallery items of those classes")}
    return dataclasses.replace(splits, query=query, gallery=gallery, test_classes=list(classes), protocol=protocol)


# ---------------------------------------------------------------------- acceptance and report

def chance_recall_at_1(splits: Splits) -> float:
    """Recall@1 of a random ranking: the chance that a random gallery item shares the query's class."""
    n = len(splits.classes)
    q = torch.bincount(splits.query.labels, minlength=n).double() / len(splits.query)
    g = torch.bincount(splits.gallery.labels, minlength=n).double() / len(splits.gallery)
    return float((q * g).sum())


def acceptance(rows: list[dict], paragon: str, chance: float) -> dict:
    by = {(r["query_model"], r["gallery_model"]): r for r in rows}
    paragon_r1 = by[(paragon, paragon)]["recall_at_1"]
    out = {"paragon_recall_at_1": paragon_r1, "chance_recall_at_1": chance, "models": {}}
    for model in _shared.LIGHT_MODELS:
        trained = [m for m in METHODS if (f"{model}_{LABELS[m]}", paragon) in by]
        hetero = {LABELS[m]: by[(f"{model}_{LABELS[m]}", paragon)]["recall_at_1"] for m in trained}
        entry = {"heterogeneous_recall_at_1": hetero,
                 "homogeneous_recall_at_1": {LABELS[m]: by[(f"{model}_{LABELS[m]}",) * 2]["recall_at_1"]
                                             for m in trained}}
        for variant in ("bct", "bct_mean"):
            row = by[(f"{model}_{variant}", paragon)]
            entry[variant] = {"compatible": row["compatible"], "gap_to_paragon": row["gap_to_paragon"],
                              "within_1_5_points": row["gap_to_paragon"] is not None
                              and row["gap_to_paragon"] >= -ACCEPT_GAP,
                              "minus_l2": hetero[variant] - hetero["l2"] if "l2" in hetero else None,
                              "minus_distill": hetero[variant] - hetero["distill"] if "distill" in hetero else None}
        out["models"][model] = entry
    return out


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _signed(v) -> str:
    return "—" if v is None else f"{100 * v:+.2f}"


def pair_table(rows: list[dict], gallery: str) -> str:
    """Every model as query against `gallery`, with its own homogeneous Recall@1 alongside."""
    homo = {r["query_model"]: r["recall_at_1"] for r in rows if r["homogeneous"]}
    table = []
    for r in rows:
        if r["gallery_model"] != gallery:
            continue
        table.append({"method": r["method"], "query model": r["query_model"],
                      "R@1 M(q,g)": _pct(r["recall_at_1"]), "R@1 M(q,q)": _pct(homo.get(r["query_model"])),
                      "MAP@R": _pct(r["map_at_r"]), "mAP": _pct(r["map"]), "TAR@FAR=1e-3": _pct(r["tar_at_far_1e-3"]),
                      "compatible": "—" if r["compatible"] is None else ("yes" if r["compatible"] else "no"),
                      "gap to paragon": _signed(r["gap_to_paragon"]),
                      "query MFLOPs": f"{r['query_mflops']:.2f}", "FLOPs ratio": f"{r['flops_ratio']:.1f}x",
                      "train s": "—" if r["train_seconds"] is None else f"{r['train_seconds']:.1f}",
                      "epochs": r["epochs"]})
    return markdown_table(table, list(table[0]))


def matrix_table(rows: list[dict]) -> str:
    labels = list(dict.fromkeys(r["query_model"] for r in rows))
    by = {(r["query_model"], r["gallery_model"]): r["recall_at_1"] for r in rows}
    table = [{"query \\ gallery": q, **{g: _pct(by.get((q, g))) for g in labels}} for q in labels]
    return markdown_table(table, ["query \\ gallery", *labels])


def markdown(payload: dict, paragon: str) -> str:
    acc = payload["acceptance"]
    protocol = payload["protocol"]
    lines = [f"# BCT: compatible light query models against the paragon{' (quick run)' if payload['quick'] else ''}",
             "", f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']}", "",
             f"Protocol: {protocol['protocol']}, {protocol['source']}; queries = {protocol['query']}; "
             f"gallery = {protocol['gallery']}.", "",
             "Metrics in percent. M(q, g): queries embedded by the query model, gallery by the gallery model. "
             "Compatible: M(q, g) > M(q, q) on Recall@1. Gap to paragon: M(q, g) - M(g, g) in Recall@1 points. "
             "FLOPs ratio: gallery FLOPs / query FLOPs (FLOPs = 2 x MACs, batch 1, 1x28x28). "
             "λ = 1 for every compatibility term.", "",
             "## Acceptance", "",
             f"Paragon homogeneous Recall@1: {_pct(acc['paragon_recall_at_1'])}; chance Recall@1 (random ranking): "
             f"{_pct(acc['chance_recall_at_1'])}.", ""]
    names = {"bct": "BCT", "bct_mean": "BCT (class-mean rows)"}
    for model, a in acc["models"].items():
        h = a["heterogeneous_recall_at_1"]
        lines.append(
            f"- **{model}**: heterogeneous Recall@1 against the paragon: independent {_pct(h['independent'])}, "
            f"BCT {_pct(h['bct'])}, BCT with class-mean rows {_pct(h['bct_mean'])}, L2 {_pct(h.get('l2'))}, "
            f"distillation {_pct(h.get('distill'))}" + ("" if "l2" in h else " (not trained for this model: "
                                                        "see --baseline-models)") + ".")
        for variant, name in names.items():
            v = a[variant]
            lines.append(
                f"  - {name}: criterion holds: {'yes' if v['compatible'] else 'no'}; gap to the paragon "
                f"{_signed(v['gap_to_paragon'])} points ({'within' if v['within_1_5_points'] else 'NOT within'} 1.5); "
                f"vs L2 {_signed(v['minus_l2'])}, vs distillation {_signed(v['minus_distill'])} points.")
    lines += ["", "bct: the published influence loss through the gallery classifier W_g. bct_mean: the same loss "
              "with the gallery model's class means as every row (docs/compat.md explains why W_g constrains "
              "little of a 128-dimensional embedding when there are 10 classes).",
              "", f"## Every model as query, the paragon ({paragon}) as gallery", "",
              pair_table(payload["rows"], paragon),
              "## Recall@1 for every (query, gallery) pair", "", "Rows: query model; columns: gallery model.", "",
              matrix_table(payload["rows"])]
    open_set = payload.get("open_set")
    if open_set:
        gallery = next(iter(open_set["groups"].values()))["rows"][0]["gallery_model"]
        lines += ["## Open set: new classes through the pseudo-classifier", "", open_set["design"], "",
                  f"Gallery model trained on: {', '.join(open_set['gallery_train_classes'])}. "
                  f"Query models trained on: {', '.join(open_set['query_train_classes'])}. "
                  f"BCT's pseudo-classifier rows (gallery class means; bct_mean uses class means for every class): {', '.join(open_set['pseudo_classifier_classes'] or [])}.",
                  ""]
        for group, data in open_set["groups"].items():
            lines += [f"### {group}: {', '.join(data['classes'])}", "",
                      f"Queries: {data['protocol']['query']}; gallery: {data['protocol']['gallery']}.", "",
                      pair_table(data["rows"], gallery)]
    lines += ["## Timings (s)", "", ", ".join(f"{k} {v}" for k, v in payload["timings_s"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    bench = Bench(args)
    started = time.perf_counter()
    splits, grid, paragon = bench.closed_set()
    rows = bench.rows(grid)
    name = "bct_quick" if args.quick else "bct"

    def write(open_set) -> str:
        bench.timings["total"] = round(time.perf_counter() - started, 1)
        extra = {"quick": args.quick, "light_epochs": bench.epochs,
                 "acceptance": acceptance(rows, paragon, chance_recall_at_1(splits)), "open_set": open_set}
        _, md_path = write_results(name, protocol=splits.protocol, rows=rows, timings_s=bench.timings, extra=extra,
                                   results_dir=_shared.ROOT / "docs" / "results",
                                   markdown=lambda payload: markdown(payload, paragon))
        return md_path.read_text()

    # the closed-set results are written first, so a long open-set part never puts them at risk
    text = write(None)
    if not args.skip_open_set:
        text = write(bench.open_set())
    print(text)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
