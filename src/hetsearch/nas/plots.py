"""The Pareto plot of a search: cost vs heterogeneous vs homogeneous accuracy of every path the
search evaluated (`hetsearch nas search` writes `pareto.png` beside `evaluated.jsonl`).

Two panels: (left) MFLOPs vs heterogeneous M(a, g), the Pareto front (no cheaper path is at least
as accurate) drawn as a step line, each point coloured by its homogeneous M(a, a); (right)
homogeneous vs heterogeneous accuracy, coloured by MFLOPs (do the two follow each other?). The
searched net is a star; `marks` adds other nets (e.g. hand-designed ones) with their own numbers.
Every number is whatever the records hold: for a search, inherited supernet weights with BN
recalibrated on the validation split, which is not the scale of a retrained net.

Imports nothing of the search's inputs (data, training, evaluation): it reads records.
matplotlib is imported lazily (slow to import; only drawing needs it) and drawn on an Agg canvas
(no pyplot: needs no display, leaves the caller's backend alone).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Sequence

from hetsearch.utils.io import atomic_write_bytes

PARETO_PNG = "pareto.png"
MARKERS = ("^", "s", "D", "v", "P", "X", "o")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, accuracy) points that no other point dominates (cost <= and accuracy
    >=, one of them strictly), by increasing cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _cost(record: dict) -> float:
    return float(record["mflops"] if record.get("mflops") is not None else record["cost"])


def _values(records: Sequence[dict], metric: str) -> tuple[list[float], list[float], list[float]]:
    """(MFLOPs, heterogeneous, homogeneous) of the records that have all three."""
    keep = [r for r in records if r.get(f"hetero_{metric}") is not None and r.get(f"homo_{metric}") is not None]
    return ([_cost(r) for r in keep], [float(r[f"hetero_{metric}"]) for r in keep],
            [float(r[f"homo_{metric}"]) for r in keep])


def _draw_marks(ax_cost, ax_acc, best: dict | None, marks: Sequence[dict], metric: str) -> None:
    entries = ([{**best, "label": f"searched {best.get('arch', '')}", "marker": "*"}] if best else []) + [
        {**m, "marker": m.get("marker") or MARKERS[i % len(MARKERS)]} for i, m in enumerate(marks)]
    for m in entries:
        het, homo = m.get(f"hetero_{metric}"), m.get(f"homo_{metric}")
        if het is None:
            continue
        size = 220 if m["marker"] == "*" else 70
        style = dict(marker=m["marker"], s=size, facecolor="none" if m["marker"] != "*" else "gold",
                     edgecolor="black", linewidths=1.2, zorder=5, label=str(m.get("label", "")))
        ax_cost.scatter([_cost(m)], [het], **style)
        if homo is not None:
            ax_acc.scatter([homo], [het], **style)


def draw_pareto(records: Sequence[dict], *, metric: str = "recall_at_1", best: dict | None = None,
                marks: Sequence[dict] = (), title: str = "") -> bytes:
    """The two-panel Pareto figure of `records` (see the module doc) as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cost, het, homo = _values(records, metric)
    fig = Figure(figsize=(12, 5))
    FigureCanvasAgg(fig)
    ax_cost, ax_acc = fig.subplots(1, 2)
    points = ax_cost.scatter(cost, het, c=homo, cmap="viridis", s=18, alpha=0.8)
    fig.colorbar(points, ax=ax_cost, label=f"homogeneous M(a, a) {metric}")
    front = pareto_front(list(zip(cost, het)))
    if front:
        xs, ys = [cost[i] for i in front], [het[i] for i in front]
        ax_cost.step(xs, ys, where="post", color="crimson", linewidth=1.5, label=f"Pareto front ({len(front)})")
    ax_cost.set(xlabel="MFLOPs (2 x MACs)", ylabel=f"heterogeneous M(a, g) {metric}",
                title=f"{len(cost)} evaluated paths: cost vs heterogeneous")
    acc = ax_acc.scatter(homo, het, c=cost, cmap="plasma", s=18, alpha=0.8)
    fig.colorbar(acc, ax=ax_acc, label="MFLOPs")
    ax_acc.set(xlabel=f"homogeneous M(a, a) {metric}", ylabel=f"heterogeneous M(a, g) {metric}",
               title="homogeneous vs heterogeneous")
    _draw_marks(ax_cost, ax_acc, best, marks, metric)
    for ax in (ax_cost, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best", framealpha=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    return buffer.getvalue()


def read_search_log(run_dir: str | Path) -> tuple[list[dict], dict | None]:
    """(every evaluated record of `evaluated.jsonl`, the winner of `best.json` or None)."""
    run_dir = Path(run_dir)
    log = run_dir / "evaluated.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    best_path = run_dir / "best.json"
    return records, (json.loads(best_path.read_text()) if best_path.is_file() else None)


def plot_search(run_dir: str | Path, out: str | Path | None = None, *, marks: Sequence[dict] = (),
                metric: str = "recall_at_1", title: str | None = None) -> Path:
    """Write the Pareto plot of the search in `run_dir` (default `run_dir/pareto.png`); `marks`:
    other nets as dicts with label, mflops, hetero_<metric>, homo_<metric> (and optionally marker)."""
    records, best = read_search_log(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / PARETO_PNG
    if title is None:
        title = f"{Path(run_dir).name}: {len(records)} paths" + (
            f", searched {best['arch']} ({_cost(best):.2f} MFLOPs)" if best else "")
    atomic_write_bytes(out, draw_pareto(records, metric=metric, best=best, marks=marks, title=title))
    return out
