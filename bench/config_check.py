"""How fast a bad training config is refused (issue 22): each case runs `hetsearch train CONFIG
OVERRIDE` as a user would (the installed console script, a fresh process) --repeat times and
records the exit code, the lines printed, whether a `data:` line came first, and the wall time.

The acceptance case is `compat.method=nonsense`: exit 2, one line, before any `data:` line, under
2 seconds. The registry-name cases are refused before torch is imported
(`hetsearch.registries.check_config_names`); a wrong type (`train.epochs=many`) is refused when the
typed config loads, after torch (reported for comparison).

    python bench/config_check.py            # -> docs/results/config_check.{json,md}
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hetsearch.utils.results import git_revision, write_results  # noqa: E402

CONFIG = "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml"
CASES = ("compat.method=nonsense", "compat.method=bct+nonsense", "model.backbone=resnet1", "data.source=imagenet",
         "train.epochs=many")
LIMIT_S = 2.0


def _hetsearch() -> list[str]:
    script = Path(sys.executable).with_name("hetsearch")
    return [str(script)] if script.exists() else [shutil.which("hetsearch") or "hetsearch"]


def run_case(override: str, repeat: int) -> dict:
    walls, done = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([*_hetsearch(), "train", CONFIG, override], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "200"}, timeout=300)
        walls.append(time.perf_counter() - start)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return {"override": override, "exit_code": done.returncode, "lines": len(lines), "message": lines[0] if lines else "",
            "data_line_before": any(line.startswith("data:") for line in lines),
            "wall_s_median": round(statistics.median(walls), 3), "wall_s_max": round(max(walls), 3),
            "repeats": repeat}


def markdown(payload: dict) -> str:
    out = ["# Refusing a bad training config (issue 22)", "", f"Command: `{payload['command']}`  ",
           f"Machine: {payload['machine']}  ", f"Git revision: {payload['git_revision']}", "",
           f"`hetsearch train {CONFIG} OVERRIDE`, a fresh process each time, {payload['protocol']['repeats']} runs per "
           "case.", "", "| override | exit | lines | data: line first | median wall s | max wall s | message |",
           "|---|---:|---:|---|---:|---:|---|"]
    for row in payload["checks"]:
        out.append(f"| `{row['override']}` | {row['exit_code']} | {row['lines']} | {row['data_line_before']} | "
                   f"{row['wall_s_median']:.2f} | {row['wall_s_max']:.2f} | {row['message']} |")
    out += ["", f"Acceptance (`compat.method=nonsense`: exit 2, one line, no `data:` line, max wall under "
                f"{LIMIT_S:.0f} s): **{'met' if payload['acceptance_met'] else 'not met'}**.", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    start = time.perf_counter()
    checks = [run_case(override, args.repeat) for override in CASES]
    first = checks[0]
    met = (first["exit_code"] == 2 and first["lines"] == 1 and not first["data_line_before"]
           and first["wall_s_max"] < LIMIT_S)
    json_path, _ = write_results("config_check", protocol={"config": CONFIG, "repeats": args.repeat,
                                                           "limit_s": LIMIT_S},
                                 rows=[], timings_s={"total": round(time.perf_counter() - start, 1)},
                                 extra={"git_revision": git_revision(), "checks": checks, "acceptance_met": met,
                                        "nonsense_wall_s_max": first["wall_s_max"]},
                                 results_dir=ROOT / "docs" / "results", markdown=markdown)
    print(f"wrote {json_path}: compat.method=nonsense max {first['wall_s_max']:.2f} s, acceptance "
          f"{'met' if met else 'not met'}")


if __name__ == "__main__":
    main()
