"""Benchmark results: one JSON + one Markdown table per bench script, in docs/results/.

Format (shared by every `bench/NAME.py`):
`{"command", "machine", "protocol", "rows": [one per (query model, gallery model) pair], "timings_s", ...}`
with accuracies as fractions 0..1.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from hetsearch.utils.io import atomic_write_json, atomic_write_text
from hetsearch.utils.revision import git_revision  # noqa: F401  (re-exported: the benches' import)

REQUIRED_ROW_KEYS = ("method", "query_model", "gallery_model", "recall_at_1", "map_at_r",
                     "query_mflops", "gallery_mflops")


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, torch threads {torch.get_num_threads()}")


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(name: str, *, protocol: dict, rows: list[dict], timings_s: dict, columns: Sequence[str] = (),
                  title: str = "", notes: str = "", extra: dict | None = None,
                  results_dir: str | Path = "docs/results",
                  markdown: Callable[[dict], str] | None = None) -> tuple[Path, Path]:
    """Write docs/results/NAME.json and NAME.md (the table made from the JSON rows; or, for a bench
    with its own report, ``markdown(payload)``, given the JSON payload)."""
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED_ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"results row {i} lacks {missing}")
    payload = {"command": command_line(), "machine": machine_info(), "protocol": protocol,
               "rows": rows, "timings_s": timings_s, **(extra or {})}
    results_dir = Path(results_dir)
    json_path, md_path = results_dir / f"{name}.json", results_dir / f"{name}.md"
    atomic_write_json(json_path, payload)
    if markdown is not None:
        atomic_write_text(md_path, markdown(payload))
        return json_path, md_path
    md = [f"# {title}", "", f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']}", "",
          "Protocol: " + "; ".join(f"{k}: {v}" for k, v in protocol.items()), "",
          markdown_table(rows, columns)]
    if timings_s:
        md += ["Timings (s): " + ", ".join(f"{k} {v}" for k, v in timings_s.items()), ""]
    if notes:
        md += [notes.strip(), ""]
    atomic_write_text(md_path, "\n".join(md))
    return json_path, md_path
