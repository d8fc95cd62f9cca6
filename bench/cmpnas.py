"""Issue 4 benchmark: compatibility by architecture (CMP-NAS) against the paragon and BCT light models.

Closed set (Fashion-MNIST; queries = test split, gallery = train split minus validation).
Models: the paragon (configs/fashion_mnist/gallery.yaml, shared with the other benches, in
runs/bench/gallery), the BCT-trained MobileNetV3-small x0.5 and ShuffleNetV2 x0.5
(runs/bench/<model>_bct, shared with bench/bct.py), and CMP-NAS query nets: one supernet trained
with BCT against the paragon, searched under two FLOPs budgets (evolution, reward R3, validation
split only), each winner retrained from scratch with BCT for the same epochs as the light models.
Optional ablations (--ablations): the supernet without BCT, and rewards R1 / R2.

Every row is a (query model, gallery model) pair: heterogeneous M(q, paragon) with the query
model's homogeneous M(q, q) beside it; accuracies are fractions. Writes
docs/results/cmpnas.{json,md} (cmpnas_quick.* with --quick); runs in runs/bench[_quick]/.

    python bench/cmpnas.py                    # full profile
    python bench/cmpnas.py --quick            # minutes: subsets, 1 epoch, tiny search (checks that it runs)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _shared
import torch

from hetsearch.config import TrainRunConfig
from hetsearch.data import make_splits
from hetsearch.nas.retrain import retrain
from hetsearch.nas.runner import SearchRunConfig, run_search
from hetsearch.train import train
from hetsearch.utils.results import write_results
from hetsearch.utils.typed_config import load_config

BUDGETS_MFLOPS = (1.9, 1.0)   # >= 30x and >= 57x fewer FLOPs than the paragon (57.2 MFLOPs)
ACCEPT_GAP = 0.005            # hetero Recall@1 within 0.5 points of the paragon's homogeneous Recall@1
QUICK = ["data.max_train_items=3000", "data.max_test_items=500", "train.epochs=1"]
QUICK_SEARCH = ["search.population=8", "search.generations=2", "search.parents=4", "search.mutations=3",
                "search.crossovers=3", "evaluator.calib_batches=2", "evaluator.val_items=200"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets and 1 epoch, to check the script")
    parser.add_argument("--epochs", type=int, default=_shared.LIGHT_EPOCHS,
                        help="retrain epochs of the searched nets (default: the light models' recipe)")
    parser.add_argument("--supernet-epochs", type=int, default=None, help="default: configs/fashion_mnist/supernet.yaml")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS_MFLOPS)), help="MFLOPs budgets, comma-separated")
    parser.add_argument("--ablations", action="store_true", help="also: supernet without BCT; rewards R1 and R2")
    parser.add_argument("--device", default=None, help="runtime.device (default: auto)")
    return parser.parse_args()


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.runs, self.extra = _shared.runs_and_overrides(args, QUICK)
        self.gallery_path = Path(self.runs) / "gallery" / "model.pt"
        self.timings: dict[str, float] = {}
        self.info: dict[str, dict] = {}

    # ------------------------------------------------------------------ stages
    def paragon(self, splits=None):
        cfg = _shared.paragon_config(self.extra)
        result = train(cfg, resume=True, splits=splits)
        self.timings["train_paragon"] = round(result.train_seconds, 1)
        return cfg, result.model_path

    def light_bct(self, model: str, splits) -> Path:
        cfg = _shared.light_config(model, "bct", _shared.LIGHT_EPOCHS if not self.args.quick else 1,
                                   [*self.extra, f"compat.gallery_model={self.gallery_path}"])
        result = train(cfg, resume=True, splits=splits)
        self.timings[f"train_{cfg.name}"] = round(result.train_seconds, 1)
        self.info[str(result.model_path)] = {"method": "bct", "name": cfg.name, "train_seconds": result.train_seconds}
        return result.model_path

    def supernet(self, splits, bct: bool = True) -> Path:
        name = "cmpnas_supernet" if bct else "cmpnas_supernet_nobct"
        overrides = [f"output_dir={self.runs}", f"name={name}", f"compat.gallery_model={self.gallery_path}",
                     *([] if bct else ["compat.method=none"]), *self.extra]
        if self.args.supernet_epochs:
            overrides.append(f"train.epochs={self.args.supernet_epochs}")
        cfg = load_config(TrainRunConfig, _shared.CONFIGS / "supernet.yaml", overrides)
        cfg.model.backbone_args.setdefault("sample_embedding_dim", cfg.model.embedding_dim)
        result = train(cfg, resume=True, splits=splits)
        self.timings[f"train_{name}"] = round(result.train_seconds, 1)
        return result.model_path

    def search(self, splits, supernet: Path, budget: float, reward: str = "r3", tag: str = "") -> Path:
        name = f"cmpnas_search_{budget:g}mf{tag}"
        overrides = [f"output_dir={self.runs}", f"name={name}", f"supernet={supernet}",
                     f"gallery_model={self.gallery_path}", f"search.max_cost={budget}", f"reward.name={reward}",
                     *(QUICK_SEARCH if self.args.quick else [])]
        if self.args.device:
            overrides.append(f"runtime.device={self.args.device}")
        if self.args.quick:
            overrides += ["data.max_train_items=3000", "data.max_test_items=500"]
        cfg = load_config(SearchRunConfig, _shared.CONFIGS / "search.yaml", overrides)
        run_search(cfg, splits=splits, resume=True)
        summary = json.loads((cfg.run_dir / "search_summary.json").read_text())
        self.timings[f"search_{budget:g}mf{tag}"] = summary["total_seconds"]
        return cfg.run_dir / "best.json"

    def retrain(self, splits, best: Path, budget: float, tag: str = "") -> Path:
        name = f"cmpnas_{budget:g}mf{tag}"
        cfg = load_config(TrainRunConfig, _shared.CONFIGS / "retrain.yaml",
                          [f"output_dir={self.runs}", f"name={name}", f"train.epochs={self.args.epochs}",
                           f"compat.gallery_model={self.gallery_path}", *self.extra])
        result = retrain(cfg, best, resume=True, splits=splits)
        self.timings[f"retrain_{name}"] = round(result.train_seconds, 1)
        search_info = json.loads(best.read_text())
        self.info[str(result.model_path)] = {"method": "cmpnas", "name": name, "budget_mflops": budget,
                                             "arch": search_info["arch"], "train_seconds": result.train_seconds,
                                             "search_val": {k: search_info.get(k) for k in (
                                                 "reward", "hetero_recall_at_1", "homo_recall_at_1")}}
        return result.model_path

    # ------------------------------------------------------------------ evaluation
    def rows(self, splits, query_paths: list[Path]) -> list[dict]:
        queries = [(path, self.info.get(str(path), {})) for path in query_paths]
        return _shared.evaluate_against_paragon(self.gallery_path, queries, splits, self.args.device, self.timings)


def acceptance(rows: list[dict], timings: dict) -> dict:
    paragon = rows[0]
    light = [r for r in rows if r["method"] == "bct"]
    out = {}
    for r in (r for r in rows if r["method"] == "cmpnas" and r["label"].count("_") == 1):
        cheaper_light = [lr for lr in light if lr["query_mflops"] >= r["query_mflops"]]
        best_light = max((lr["recall_at_1"] for lr in cheaper_light), default=None)
        budget = r.get("budget_mflops")
        search_and_supernet = timings.get("train_cmpnas_supernet", 0) + timings.get(f"search_{budget:g}mf", 0)
        retrain_s = timings.get(f"retrain_{r['label']}")
        out[r["label"]] = {
            "within_0.5_points_of_paragon": bool(r["recall_at_1"] >= paragon["recall_at_1"] - ACCEPT_GAP),
            "flops_reduction_at_least_30x": bool(r["flops_reduction_vs_paragon"] >= 30),
            "beats_best_bct_light_model_with_at_least_its_flops": None if best_light is None else bool(r["recall_at_1"] >= best_light),
            "supernet_plus_search_over_one_query_training": round(search_and_supernet / retrain_s, 2) if retrain_s else None,
        }
    return out


def main() -> None:
    args = parse_args()
    bench = Bench(args)
    started = time.perf_counter()
    paragon_cfg = _shared.paragon_config(bench.extra)
    splits = make_splits(paragon_cfg.data)
    bench.paragon(splits)
    queries = [bench.light_bct(model, splits) for model in _shared.LIGHT_MODELS]
    supernet = bench.supernet(splits)
    budgets = [float(b) for b in args.budgets.split(",") if b]
    for budget in budgets:
        queries.append(bench.retrain(splits, bench.search(splits, supernet, budget), budget))
    if args.ablations:
        budget = budgets[0]
        nobct = bench.supernet(splits, bct=False)
        queries.append(bench.retrain(splits, bench.search(splits, nobct, budget, tag="_nobct"), budget, tag="_nobct"))
        for reward in ("r1", "r2"):
            tag = f"_{reward}"
            queries.append(bench.retrain(splits, bench.search(splits, supernet, budget, reward, tag=tag), budget, tag=tag))
    rows = bench.rows(splits, queries)
    bench.timings["total_wall"] = round(time.perf_counter() - started, 1)
    checks = acceptance(rows, bench.timings)
    name = "cmpnas_quick" if args.quick else "cmpnas"
    columns = ["method", "label", "recall_at_1", "map_at_r", "homo_recall_at_1", "homo_map_at_r", "query_mflops",
               "flops_reduction_vs_paragon", "gap_to_paragon_recall_at_1", "compatible", "train_seconds", "arch"]
    write_results(name, protocol=splits.protocol, rows=rows, timings_s=bench.timings, columns=columns,
                  title="CMP-NAS: searched query nets vs the paragon and BCT light models (heterogeneous search)",
                  notes=("recall_at_1 / map_at_r: heterogeneous M(q, paragon), test queries vs the training-split "
                         "gallery embedded by the paragon; homo_*: M(q, q). FLOPs = 2 x MACs at batch 1, 1x28x28. "
                         "Searches use the validation split only (R3 = M(a,g) + 0.5 M(a,a), Recall@1). "
                         f"Acceptance checks: {json.dumps(checks)}"),
                  extra={"acceptance": checks, "budgets_mflops": budgets,
                         "search_config": "configs/fashion_mnist/search.yaml",
                         "supernet_config": "configs/fashion_mnist/supernet.yaml"})
    print(open(f"docs/results/{name}.md").read())


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
