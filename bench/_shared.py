"""Model recipes shared by the bench scripts, so that each bench reuses the others' runs.

Every bench trains into runs/bench/<name>; `train(cfg, resume=True)` returns at once when a run
with the same config has finished, so the paragon is trained once for all benches.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import time  # noqa: E402

from hetsearch.config import TrainRunConfig  # noqa: E402
from hetsearch.eval import classification_accuracy  # noqa: E402
from hetsearch.eval.report import evaluate_loaded  # noqa: E402
from hetsearch.models import load_checkpoint  # noqa: E402
from hetsearch.utils.typed_config import load_config  # noqa: E402

BENCH_RUNS = "runs/bench"
CONFIGS = ROOT / "configs" / "fashion_mnist"
LIGHT_MODELS = ("mobilenetv3_small", "shufflenetv2_x0_5")
LIGHT_EPOCHS = 6


def runs_and_overrides(args, quick_overrides: list[str]) -> tuple[str, list[str]]:
    """The runs folder and the config overrides every model of a bench gets (--quick, --device)."""
    runs = f"{BENCH_RUNS}_quick" if args.quick else BENCH_RUNS
    extra = [*quick_overrides, f"output_dir={runs}"] if args.quick else []
    if args.device:
        extra.append(f"runtime.device={args.device}")
    return runs, extra


def paragon_config(extra: list[str] | None = None, config: str = "gallery.yaml") -> TrainRunConfig:
    return load_config(TrainRunConfig, CONFIGS / config, [f"output_dir={BENCH_RUNS}", *(extra or [])])


def light_config(model: str, method: str, epochs: int = LIGHT_EPOCHS, extra: list[str] | None = None) -> TrainRunConfig:
    """A light query model trained with compatibility `method` (none = independent) against the paragon."""
    gallery = f"{BENCH_RUNS}/gallery/model.pt" if method != "none" else "null"
    name = f"{model}_{'independent' if method == 'none' else method}"
    return load_config(TrainRunConfig, CONFIGS / f"query_{model}.yaml",
                       [f"output_dir={BENCH_RUNS}", f"name={name}", f"train.epochs={epochs}",
                        f"compat.method={method}", f"compat.gallery_model={gallery}", *(extra or [])])


def evaluate_against_paragon(gallery_path: Path, queries: list[tuple[Path, dict]], splits, device: str | None,
                             timings: dict) -> list[dict]:
    """One row per query model: heterogeneous M(q, paragon) and homogeneous M(q, q), after the
    paragon's own row. `queries` pairs each checkpoint with what the bench knows of it (method,
    name, train_seconds, ...; the keys listed in `_ROW_INFO_KEYS` are copied into the row)."""
    device = device or "auto"
    paragon = load_checkpoint(gallery_path)
    cache: dict = {}
    started = time.perf_counter()
    homo_paragon = evaluate_loaded(paragon, paragon, splits, device=device, embedding_cache=cache)["metrics"]
    rows = [_row("paragon", "paragon", paragon, paragon, homo_paragon, homo_paragon, {})]
    rows[0]["query_test_top1"] = _test_top1(paragon, splits, device)
    for path, info in queries:
        q = load_checkpoint(path)
        hetero = evaluate_loaded(q, paragon, splits, device=device, embedding_cache=cache)["metrics"]
        homo = evaluate_loaded(q, q, splits, device=device, embedding_cache=cache)["metrics"]
        rows.append(_row(info.get("method", "?"), info.get("name", q.meta.model_id), q, paragon, hetero, homo, info))
        rows[-1]["query_test_top1"] = _test_top1(q, splits, device)
    timings["evaluate_all"] = round(time.perf_counter() - started, 1)
    ref = rows[0]
    for row in rows:
        row["gap_to_paragon_recall_at_1"] = row["recall_at_1"] - ref["recall_at_1"]
        row["flops_reduction_vs_paragon"] = round(ref["query_mflops"] / row["query_mflops"], 1)
        row["compatible"] = None if row["method"] == "paragon" else bool(row["recall_at_1"] > row["homo_recall_at_1"])
    return rows


def _test_top1(loaded, splits, device: str) -> float | None:
    """The model's own-classifier accuracy on the query (test) split; closed set only."""
    if list(loaded.meta.classes) != list(splits.classes) or splits.protocol.get("protocol") != "closed_set":
        return None
    return classification_accuracy(loaded.model, splits.query.images, splits.query.labels,
                                   device=None if device == "auto" else device)


_ROW_INFO_KEYS = ("epochs", "budget_mflops", "arch", "search_val")


def _row(method, label, q, g, hetero, homo, info) -> dict:
    return {"method": method, "label": label, "query_model": q.meta.model_id, "gallery_model": g.meta.model_id,
            "query_backbone": f"{q.meta.spec.backbone} {q.meta.spec.backbone_args or ''}".strip(),
            "recall_at_1": hetero["recall_at_1"], "map_at_r": hetero["map_at_r"],
            "homo_recall_at_1": homo["recall_at_1"], "homo_map_at_r": homo["map_at_r"],
            "query_mflops": q.meta.flops / 1e6, "gallery_mflops": g.meta.flops / 1e6, "query_params": q.meta.params,
            "train_seconds": round(info.get("train_seconds", 0.0), 1) or None,
            **{k: info[k] for k in _ROW_INFO_KEYS if k in info}}


def grid_rows(grid: dict, train_info: dict[str, dict]) -> list[dict]:
    """One results row per evaluated (query model, gallery model) pair of a compatibility grid
    (`hetsearch.eval.grid.run_grid`), with the query model's training cost from `train_info`
    (run name -> method, backbone, train_seconds, epochs)."""
    out = []
    for p in grid["pairs"]:
        if p.get("skipped"):
            continue
        info = train_info.get(p["query"], {})
        out.append({
            "method": info.get("method", p["query_method"]), "query_model": p["query"],
            "gallery_model": p["gallery"], "query_backbone": info.get("backbone"),
            "recall_at_1": p["recall_at_1"], "map_at_r": p["map_at_r"], "map": p["map"],
            "tar_at_far_1e-3": p["tar_at_far_1e-3"], "compatible": p["compatible"],
            "gap_to_paragon": p["gap_to_paragon"], "query_mflops": p["query_mflops"],
            "gallery_mflops": p["gallery_mflops"], "flops_ratio": p["flops_ratio"],
            "declared_compatible": p["declared_compatible"], "homogeneous": p["homogeneous"],
            "train_seconds": info.get("train_seconds"), "epochs": info.get("epochs"),
            "query_model_id": p["query_model"], "gallery_model_id": p["gallery_model"],
            "error": p.get("error")})
    return out
