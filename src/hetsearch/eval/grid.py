"""The compatibility grid: every (query model, gallery model) pair of a list of checkpoints.

M(φ_q, φ_g) is measured for all pairs on one protocol (queries and gallery from `Splits`); the
diagonal is each model's homogeneous accuracy M(φ, φ). Per off-diagonal pair it reports

- `compatible`: the empirical criterion M(φ_q, φ_g) > M(φ_q, φ_q) on Recall@1 (mixing beats
  using the query model alone; BCT's definition);
- `gap_to_paragon`: M(φ_q, φ_g) - M(φ_g, φ_g), how much heterogeneous search loses against
  searching with the gallery model on both sides (Recall@1 and MAP@R);
- `flops_ratio`: gallery FLOPs / query FLOPs, how many times cheaper a query is than with the
  gallery model (FLOPs = 2 x MACs at batch 1).

Each model embeds each set once (an embedding cache shared by all pairs). Pairs that cannot be
compared (different embedding dimensions or input sizes) are kept in the grid with the reason,
instead of aborting the whole grid.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetsearch.data import Splits
from hetsearch.errors import CompatibilityError
from hetsearch.eval.verification import far_key
from hetsearch.eval.report import evaluate_loaded
from hetsearch.models import LoadedModel, load_checkpoint
from hetsearch.models.contract import declared_compatible
from hetsearch.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

CRITERION_METRIC = "recall_at_1"
METRICS = ("recall_at_1", "map_at_r", "map", "tar_at_far_1e-3")
# where each reported metric comes from in `evaluate_embeddings`' output
_SOURCE_KEYS = {"tar_at_far_1e-3": "tar_at_far_{far_1e3}"}
METRIC_TITLES = {"recall_at_1": "R@1", "map_at_r": "MAP@R", "map": "mAP", "tar_at_far_1e-3": "TAR@FAR=1e-3"}


@dataclass
class GridModel:
    label: str
    loaded: LoadedModel

    @property
    def meta(self):
        return self.loaded.meta


def model_label(path: Path) -> str:
    """`runs/bench/mobilenetv3_small_bct/model.pt` -> `mobilenetv3_small_bct`; other files: their stem."""
    path = Path(path)
    return path.parent.name if path.name == "model.pt" and path.parent.name else path.stem


def load_grid_models(checkpoint_paths: list[Path]) -> tuple[list[GridModel], list[str]]:
    """Load each checkpoint once; the same model given twice (same id) is kept once."""
    models: list[GridModel] = []
    notes: list[str] = []
    seen: dict[str, str] = {}
    labels: set[str] = set()
    for path in checkpoint_paths:
        loaded = load_checkpoint(path)
        if loaded.meta.model_id in seen:
            notes.append(f"{path}: same model as {seen[loaded.meta.model_id]} ({loaded.meta.model_id}), listed once")
            continue
        label = model_label(path)
        base, n = label, 2
        while label in labels:
            label, n = f"{base}_{n}", n + 1
        labels.add(label)
        seen[loaded.meta.model_id] = str(path)
        models.append(GridModel(label, loaded))
    if not models:
        raise CompatibilityError("grid: no model checkpoints given")
    return models, notes


def _share_self_gallery(cache: dict, splits: Splits) -> None:
    """With a `test_rest` gallery, queries and gallery are one set: embed it once per model."""
    if splits.gallery is not splits.query:
        return
    for (model_id, name), emb in list(cache.items()):
        if name == "query":
            cache.setdefault((model_id, "gallery"), emb)


def _value(metrics: dict | None, key: str) -> float | None:
    if key in _SOURCE_KEYS:
        key = _SOURCE_KEYS[key].format(far_1e3=far_key(1e-3))
    if not metrics or key not in metrics or metrics[key] is None:
        return None
    value = float(metrics[key])
    return None if math.isnan(value) else value


PAIR_MODES = ("all", "first_gallery")


def evaluate_grid(models: list[GridModel], splits: Splits, device: str = "auto", pairs_mode: str = "all") -> list[dict]:
    """`pairs_mode="all"`: every (query, gallery) pair; `"first_gallery"`: only the diagonal and every
    model against the first model as gallery (what a query-model comparison needs, n instead of n²
    evaluations). Skipped pairs are kept with `skipped: True` and no metrics."""
    if pairs_mode not in PAIR_MODES:
        raise ValueError(f"pairs_mode: got {pairs_mode!r}, expected one of {PAIR_MODES}")
    cache: dict = {}
    pairs = []
    for q in models:
        for g in models:
            pair = {"query": q.label, "gallery": g.label, "query_model": q.meta.model_id,
                    "gallery_model": g.meta.model_id, "homogeneous": q is g,
                    "declared_compatible": q is g or declared_compatible(q.meta, g.meta),
                    "query_method": q.meta.compatibility,
                    "query_mflops": q.meta.flops / 1e6 if q.meta.flops else None,
                    "gallery_mflops": g.meta.flops / 1e6 if g.meta.flops else None}
            if pairs_mode == "first_gallery" and not (q is g or g is models[0]):
                pairs.append({**pair, "skipped": True, "metrics": None, "warnings": []})
                continue
            try:
                result = evaluate_loaded(q.loaded, g.loaded, splits, device=device, embedding_cache=cache)
            except CompatibilityError as exc:
                pairs.append({**pair, "error": str(exc), "metrics": None, "warnings": []})
                continue
            _share_self_gallery(cache, splits)
            pairs.append({**pair, "metrics": result["metrics"], "warnings": result["warnings"]})
    _add_derived(pairs)
    return pairs


def _add_derived(pairs: list[dict]) -> None:
    """Criterion, gap to the paragon and FLOPs ratio, from the diagonal."""
    diagonal = {p["query"]: p["metrics"] for p in pairs if p["homogeneous"]}
    for p in pairs:
        for key in METRICS:
            p[key] = _value(p["metrics"], key)
        own = diagonal.get(p["query"])
        paragon = diagonal.get(p["gallery"])
        if p["homogeneous"] or p["metrics"] is None:
            p["compatible"] = None
        else:
            hetero, homo = p[CRITERION_METRIC], _value(own, CRITERION_METRIC)
            p["compatible"] = None if hetero is None or homo is None else bool(hetero > homo)
        for key, name in (("recall_at_1", "gap_to_paragon"), ("map_at_r", "gap_to_paragon_map_at_r")):
            ref = _value(paragon, key)
            p[name] = None if p[key] is None or ref is None else p[key] - ref
        q, g = p["query_mflops"], p["gallery_mflops"]
        p["flops_ratio"] = g / q if q and g else None


def run_grid(checkpoint_paths: list[Path], splits: Splits, out_dir: Path, device: str = "auto",
             pairs_mode: str = "all") -> dict:
    """Evaluate (query, gallery) pairs (see `evaluate_grid`) and write `grid.json`, `grid.md` and
    `grid.png` to `out_dir`."""
    models, notes = load_grid_models([Path(p) for p in checkpoint_paths])
    pairs = evaluate_grid(models, splits, device=device, pairs_mode=pairs_mode)
    result = {
        "protocol": splits.protocol,
        "criterion": f"compatible: M(q, g) > M(q, q) on {CRITERION_METRIC}; gap_to_paragon: M(q, g) - M(g, g); "
                     "flops_ratio: gallery FLOPs / query FLOPs (FLOPs = 2 x MACs, batch 1)",
        "models": [{"label": m.label, "path": str(m.loaded.path), "model_id": m.meta.model_id,
                    "backbone": m.meta.spec.backbone, "backbone_args": m.meta.spec.backbone_args,
                    "embedding_dim": m.meta.spec.embedding_dim,
                    "mflops": m.meta.flops / 1e6 if m.meta.flops else None, "params": m.meta.params,
                    "compatibility": m.meta.compatibility, "compatible_with": m.meta.compatible_with}
                   for m in models],
        "pairs": pairs,
        "matrix": {key: [[_value(pairs[i * len(models) + j]["metrics"], key) for j in range(len(models))]
                         for i in range(len(models))] for key in METRICS},
        "notes": notes,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "grid.json", result)
    atomic_write_text(out_dir / "grid.md", grid_markdown(result))
    write_heatmap(result, out_dir / "grid.png")
    return result


# ----------------------------------------------------------------------------- reports

def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _ratio(value) -> str:
    """FLOPs ratio for the table: 35.5x; below 1 (a light gallery model) with significant digits, 0.028x."""
    if value is None:
        return "—"
    return f"{value:.1f}x" if value >= 1 else f"{value:.2g}x"


def _signed_pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.2f}"


def grid_markdown(result: dict) -> str:
    labels = [m["label"] for m in result["models"]]
    protocol = result["protocol"]
    lines = ["# Compatibility grid", "",
             f"Protocol: {protocol.get('protocol', '?')}; queries = {protocol.get('query', '?')}; "
             f"gallery = {protocol.get('gallery', '?')}.", "",
             "Metrics in percent. Rows: query model; columns: gallery model; the diagonal is homogeneous search.",
             f"Criterion (\"compatible\"): M(q, g) > M(q, q) on Recall@1. Gap to paragon: M(q, g) - M(g, g). "
             "FLOPs ratio: gallery FLOPs / query FLOPs.", "",
             "## Models", "", "| model | backbone | MFLOPs | compatibility | trained against |",
             "|---|---|---:|---|---|"]
    by_id = {m["model_id"]: m["label"] for m in result["models"]}
    for m in result["models"]:
        against = by_id.get(m["compatible_with"], m["compatible_with"] or "—")
        mflops = "—" if m["mflops"] is None else f"{m['mflops']:.2f}"
        lines.append(f"| {m['label']} | {m['backbone']} | {mflops} | {m['compatibility']} | {against} |")
    matrix = result["matrix"]["recall_at_1"]
    lines += ["", "## Recall@1", "", "| query \\ gallery | " + " | ".join(labels) + " |",
              "|---|" + "---:|" * len(labels)]
    for label, row in zip(labels, matrix):
        lines.append(f"| {label} | " + " | ".join(_pct(v) for v in row) + " |")
    lines += ["", "## Pairs", "",
              "| query | gallery | R@1 | MAP@R | mAP | TAR@FAR=1e-3 | compatible | gap to paragon (R@1) "
              "| FLOPs ratio | declared |", "|---|---|---:|---:|---:|---:|:---:|---:|---:|:---:|"]
    for p in result["pairs"]:
        if p.get("skipped"):
            continue
        if p.get("error"):
            lines.append(f"| {p['query']} | {p['gallery']} | not comparable: {p['error']} ||||||||")
            continue
        compatible = "—" if p["compatible"] is None else ("yes" if p["compatible"] else "no")
        ratio = _ratio(p["flops_ratio"])
        lines.append(f"| {p['query']} | {p['gallery']} | {_pct(p['recall_at_1'])} | {_pct(p['map_at_r'])} | "
                     f"{_pct(p['map'])} | {_pct(p['tar_at_far_1e-3'])} | {compatible} | "
                     f"{_signed_pct(p['gap_to_paragon'])} | {ratio} | {'yes' if p['declared_compatible'] else 'no'} |")
    for note in result.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def write_heatmap(result: dict, path: Path, metrics: tuple[str, ...] = ("recall_at_1", "map_at_r")) -> None:
    """Heat-maps (one panel per metric) with the value in each cell.

    Drawn on an Agg canvas directly (no pyplot), so it needs no display and leaves the caller's
    matplotlib backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [m["label"] for m in result["models"]]
    n = len(labels)
    size = max(3.0, 0.75 * n + 2.0)
    fig = Figure(figsize=(size * len(metrics), size))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        values = np.array([[np.nan if v is None else 100 * v for v in row] for row in result["matrix"][key]])
        image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
        ax.set_title(f"{METRIC_TITLES[key]} (%)")
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_xlabel("gallery model")
        ax.set_ylabel("query model")
        for i in range(n):
            for j in range(n):
                text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.1f}"
                dark = np.isnan(values[i, j]) or values[i, j] < 60
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format="png")
    atomic_write_bytes(path, buffer.getvalue())  # fsynced, then renamed: a crash leaves the old file
