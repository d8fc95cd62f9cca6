"""The learning tests over seeds x CPU kernels (issue 19): do they hold wherever they run?

Every test marked `learning` (it asserts what training or a search reaches) runs once per cell:
a base seed HETSEARCH_TEST_SEED from --seeds, times a kernel setting from --settings:
  default     oneDNN (mkldnn) as PyTorch picks it for this CPU (AVX-512 kernels where the CPU has them)
  avx2        ONEDNN_MAX_CPU_ISA=AVX2: oneDNN limited to the kernels AVX2-only CPUs run
  mkldnn_off  HETSEARCH_TEST_MKLDNN=0 (tests/conftest.py): torch.backends.mkldnn off, PyTorch's own kernels
Each cell is one `python -m pytest -p no:cacheprovider -m learning` subprocess with
OMP_NUM_THREADS=1, one after the other; the outcome of each test, its duration and the values it
measured (`record_property`: recall, losses, ...) come from the cell's JUnit XML.

Writes docs/results/NAME.{json,md} (NAME: --out, default learning_matrix) with the command, the
machine, the git revision and every cell's pytest command. Exit code 1 when a test failed in any cell.

Usage: OMP_NUM_THREADS=1 python bench/learning_matrix.py [--seeds 0,1,2,3,4]
       [--settings default,avx2,mkldnn_off] [--out learning_matrix] [-k EXPR]
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hetsearch.utils.results import git_revision, machine_info, markdown_table, write_results  # noqa: E402

SETTINGS = {
    "default": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkldnn_off": {"HETSEARCH_TEST_MKLDNN": "0"},
}


def cpu_isa() -> str:
    """The vector extensions of this CPU that oneDNN chooses kernels by."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")
    return ", ".join(f for f in wanted if f in flags) or "no AVX2"


def pytest_command(k: str | None, junit: Path) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "learning", "-o", "junit_family=xunit1",
               f"--junitxml={junit}"]
    return command + (["-k", k] if k else [])


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_junit(path: Path) -> list[dict]:
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = (found.get("message") or "").splitlines()
                break
        else:
            message = []
        tests.append({"test": f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}",
                      "outcome": outcome, "seconds": round(float(case.get("time", 0)), 1),
                      "measured": {p.get("name"): _value(p.get("value", "")) for p in case.iter("property")},
                      "message": message[0][:300] if message else ""})
    return tests


def run_cell(seed: int, setting: str, k: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HETSEARCH_TEST_SEED": str(seed), **SETTINGS[setting]}
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = pytest_command(k, junit)
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        tests = read_junit(junit) if junit.exists() else []
    shown_env = " ".join(f"{k}={v}" for k, v in {"OMP_NUM_THREADS": "1", "HETSEARCH_TEST_SEED": str(seed),
                                                 **SETTINGS[setting]}.items())
    shown = " ".join(shlex.quote(a) for a in ["python", *command[1:]] if not a.startswith("--junitxml"))
    passed = proc.returncode == 0 and bool(tests) and all(t["outcome"] == "passed" for t in tests)
    cell = {"seed": seed, "setting": setting, "passed": passed, "returncode": proc.returncode,
            "seconds": round(seconds, 1), "command": f"{shown_env} {shown}", "tests": tests}
    if not passed:
        cell["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return cell


def report(payload: dict) -> str:
    cells = payload["cells"]
    names = sorted({t["test"] for c in cells for t in c["tests"]})
    label = {(c["seed"], c["setting"]): c for c in cells}
    columns = ["test"] + [f"seed {c['seed']} {c['setting']}" for c in cells]
    rows = []
    for name in names:
        row = {"test": name.split("::")[0].removeprefix("tests/") + "::" + name.split("::")[1]}
        for c in cells:
            t = next((t for t in c["tests"] if t["test"] == name), None)
            row[f"seed {c['seed']} {c['setting']}"] = "—" if t is None else ("pass" if t["outcome"] == "passed"
                                                                            else t["outcome"].upper())
        rows.append(row)
    passed = sum(c["passed"] for c in cells)
    md = ["# Learning tests over seeds x CPU kernels", "",
          f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']}; CPU flags: {payload['cpu_isa']}  ",
          f"Git revision: {payload['git_revision']}  ", f"Date: {payload['date']}", "",
          "Protocol: " + "; ".join(f"{k}: {v}" for k, v in payload["protocol"].items()), "",
          f"**{passed} of {len(cells)} cells passed** ({len(names)} learning tests in each).", "",
          markdown_table(rows, columns), "## What each test measured", "",
          "The values the tests record (`record_property`), per cell; the bounds are in the tests.", ""]
    for name in names:
        md += [f"### {name}", ""]
        measured_rows = []
        for (seed, setting), c in label.items():
            t = next((t for t in c["tests"] if t["test"] == name), None)
            if t is not None:
                measured_rows.append({"seed": seed, "setting": setting, "outcome": t["outcome"],
                                      "s": f"{t['seconds']:.1f}", **{k: str(v) for k, v in t["measured"].items()}})
        keys = ["seed", "setting", "outcome", "s"] + sorted({k for r in measured_rows for k in r} -
                                                             {"seed", "setting", "outcome", "s"})
        md += [markdown_table(measured_rows, keys)]
    md += ["## Cells", "", markdown_table([{"seed": c["seed"], "setting": c["setting"],
                                              "passed": c["passed"], "s": c["seconds"],
                                              "command": f"`{c['command']}`"} for c in cells],
                                            ["seed", "setting", "passed", "s", "command"])]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="base seeds (HETSEARCH_TEST_SEED), comma-separated")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"kernel settings among {', '.join(SETTINGS)}")
    parser.add_argument("--out", default="learning_matrix", help="results name: docs/results/NAME.{json,md}")
    parser.add_argument("-k", default=None, help="pytest -k expression (a subset of the learning tests)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose among {list(SETTINGS)}")
    revision = git_revision(ROOT)
    cells = []
    for seed in seeds:
        for setting in settings:
            cell = run_cell(seed, setting, args.k)
            cells.append(cell)
            status = "passed" if cell["passed"] else "FAILED"
            print(f"[learning_matrix] seed {seed} {setting}: {status}, {len(cell['tests'])} tests, "
                  f"{cell['seconds']:.0f} s", flush=True)
            if not cell["passed"]:
                print(cell.get("output_tail", ""), flush=True)
    protocol = {"tests": "every test marked learning (pytest -m learning)",
                "seeds": ", ".join(map(str, seeds)),
                "settings": "; ".join(f"{s}: {' '.join(f'{k}={v}' for k, v in SETTINGS[s].items()) or 'no change'}"
                                      for s in settings),
                "threads": "OMP_NUM_THREADS=1, torch threads 1 (tests/conftest.py), one cell at a time"}
    extra = {"git_revision": revision, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "cpu_isa": cpu_isa(), "cells_passed": sum(c["passed"] for c in cells), "cells": cells}
    json_path, md_path = write_results(args.out, protocol=protocol, rows=[],
                                       timings_s={f"seed {c['seed']} {c['setting']}": c["seconds"] for c in cells},
                                       extra=extra, results_dir=ROOT / "docs" / "results", markdown=report)
    print(f"[learning_matrix] {extra['cells_passed']}/{len(cells)} cells passed; wrote {json_path}, {md_path}")
    return 0 if extra["cells_passed"] == len(cells) else 1


if __name__ == "__main__":
    sys.exit(main())
