"""One resumable experiment runner for the benches (issue 20).

A bench declares its runs as `Run`s, (protocol x model x method x seed x epochs) in a phase, and
gives the `Runner` a work function that trains and scores one run and returns its row:

    runner = Runner(rows_dir, functools.partial(my_work, settings), jobs=2, on_row=report)
    rows = runner.run(grid(["closed_set"], ["shufflenetv2_x0_5"], ["bct"], seeds=[0, 1, 2], epochs=[30]))

- resumable: a run whose row file (`rows_dir/<run.key>.json`) exists is not run again, its row
  is reused; a half-finished training is the work function's to resume (the benches train with
  `hetsearch.train.train(cfg, resume=True)`, which continues from the run's checkpoint_last.pt
  and returns at once when the run has finished);
- `jobs` runs at once, each in its own process (spawned; `threads` torch/OpenMP threads each);
- each finished run writes its row file at once (atomically), with the run's fields, the git
  revision and the command; then `on_row(row)` (a bench rewrites its results file there, so a
  call cut short leaves every finished run's results);
- a run that fails is reported (`Runner.failures`) and does not stop the others;
- `needs`: a run may need others (a search its supernet): it starts when they have finished, so a
  call of several stages keeps every job busy; one whose need failed is reported, not run.

Selection (`select_best`) reads validation metrics only: rows of the select phase carry `val_*`
numbers and nothing from the test split.

Stdlib and hetsearch.utils.revision only (the work function imports what it needs), so that a spawned worker starts fast.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shlex
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from hetsearch.utils.revision import git_revision  # noqa: F401  (stdlib only; map_in_training imports it from here)

PHASES = ("select", "final")


@dataclass(frozen=True)
class Run:
    """One training-and-scoring run. `phase` "select": scored on the validation split (a candidate
    of a choice); "final": scored on the test split (a chosen configuration). `tag`: whatever else
    makes two runs differ (a digest of the bench's settings), part of the key."""

    protocol: str
    model: str
    method: str
    seed: int
    epochs: int
    phase: str = "final"
    tag: str = ""

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"Run.phase: got {self.phase!r}, expected one of {PHASES}")

    @property
    def name(self) -> str:
        """The run without its phase (a select and a final run of one configuration share a training)."""
        parts = [self.protocol, self.model, method_slug(self.method), f"s{self.seed}", f"e{self.epochs}"]
        return "_".join(parts + ([self.tag] if self.tag else []))

    @property
    def key(self) -> str:
        """File-name stem of the run's row."""
        return f"{self.phase}_{self.name}"

    def fields(self) -> dict:
        return asdict(self)


def split_method(method: str) -> tuple[str, list[str]]:
    """"contrastive@compat.gallery_aware.temperature=0.1&compat.weight=2" -> ("contrastive", overrides):
    a method variant is the method with its own config overrides."""
    name, _, variant = method.partition("@")
    return name, [item for item in variant.split("&") if item]


def method_slug(method: str) -> str:
    """A method as it appears in names: "+" -> "_", a variant's overrides -> a short digest."""
    name, variant = split_method(method)
    slug = name.replace("+", "_")
    return f"{slug}_v{digest('&'.join(variant))}" if variant else slug


def digest(value, length: int = 8) -> str:
    """A short stable digest of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def grid(protocols: Iterable[str], models: Iterable[str], methods: Iterable[str], seeds: Iterable[int],
         epochs: Iterable[int], phase: str = "final", tag: str = "") -> list[Run]:
    """Every combination, seeds outermost (a call cut short has every configuration's first seed)."""
    return [Run(protocol, model, method, seed, e, phase, tag) for seed, protocol, model, method, e
            in itertools.product(seeds, protocols, models, methods, epochs)]


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def _init_worker(threads: int | None) -> None:
    """A spawned worker: `threads` torch / OpenMP threads (set before torch is imported)."""
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
        import torch

        torch.set_num_threads(threads)


def _timed(work: Callable[[Run], dict], run: Run) -> dict:
    started = time.perf_counter()
    row = work(run)
    return {**row, "wall_s": round(time.perf_counter() - started, 1)}


class Runner:
    """Runs `Run`s through `work(run) -> row` (see the module doc); `rows_dir` holds one row file per
    finished run. `work` must be picklable when `jobs` > 1 (a module-level function, or a
    functools.partial of one)."""

    def __init__(self, rows_dir: str | Path, work: Callable[[Run], dict], *, jobs: int = 1,
                 threads: int | None = None, on_row: Callable[[dict], None] | None = None,
                 log: Callable[[str], None] = lambda line: print(line, flush=True), revision: str | None = None):
        self.rows_dir = Path(rows_dir)
        self.work, self.jobs, self.threads, self.on_row, self.log = work, max(1, int(jobs)), threads, on_row, log
        self.revision = revision if revision is not None else git_revision(Path(__file__).resolve().parent, short=True)
        self.failures: dict[str, str] = {}

    def row_path(self, run: Run) -> Path:
        return self.rows_dir / f"{run.key}.json"

    def finished(self, run: Run) -> dict | None:
        """The row of a finished run, or None."""
        path = self.row_path(run)
        return json.loads(path.read_text()) if path.is_file() else None

    def rows(self, phase: str | None = None) -> list[dict]:
        """Every finished row in `rows_dir` (of `phase`), sorted by key."""
        rows = [json.loads(p.read_text()) for p in sorted(self.rows_dir.glob("*.json"))]
        return [r for r in rows if phase is None or r.get("phase") == phase]

    def run(self, runs: Sequence[Run], needs: Callable[[Run], Sequence[Run]] | None = None) -> list[dict]:
        """The row of every run of `runs` that has one (finished before, or now), in `runs` order.
        `needs(run)`: the runs that must have finished before `run` starts (among `runs`, or finished
        before); a run starts as soon as they have, so `jobs` stay busy across stages, and `runs` order
        is the priority among the runs ready to start. A run whose need failed does not start (a failure)."""
        runs = list(dict.fromkeys(runs))  # a run declared twice runs once
        todo = [r for r in runs if self.finished(r) is None]
        if todo:
            self.log(f"[runner] {len(runs) - len(todo)} of {len(runs)} runs finished before; "
                     f"running {len(todo)} (up to {min(self.jobs, len(todo))} at once)")
        for run, result in self._execute(todo, needs or (lambda run: ())):
            if isinstance(result, BaseException):
                self.failures[run.key] = f"{type(result).__name__}: {result}"
                self.log(f"[runner] FAILED {run.key}: {self.failures[run.key]}")
                continue
            self._write(run, result)
        return [row for row in map(self.finished, runs) if row is not None]

    def _next(self, waiting: list[Run], running, needs: Callable[[Run], Sequence[Run]]):
        """(the first waiting run whose needs have finished, None), or (a run that can never start, the
        error why: a need failed or is not in this call), or (None, None): every waiting run waits on a
        running one."""
        for run in waiting:
            missing = [n for n in needs(run) if self.finished(n) is None]
            lost = [n.key for n in missing if n not in waiting and n not in running]
            if lost:
                return run, RuntimeError(f"needs {', '.join(lost)}, which did not finish")
            if not missing:
                return run, None
        return None, None

    def _blocked(self, waiting: list[Run]):
        """What is left when nothing runs and nothing can start: runs that need each other."""
        for run in waiting:
            yield run, RuntimeError("its needs wait on each other (a cycle in needs)")

    def _write(self, run: Run, result: dict) -> None:
        row = {**result, **run.fields(), "run": run.key, "git_revision": self.revision,
               "command": command_line(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.rows_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.row_path(run).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(row, indent=1, sort_keys=True, default=str))
        os.replace(tmp, self.row_path(run))
        self.log(f"[runner] finished {run.key} ({row.get('wall_s')} s)")
        if self.on_row is not None:
            self.on_row(row)

    def _execute(self, runs: list[Run], needs: Callable[[Run], Sequence[Run]]):
        """(run, row or exception) as each run finishes: in this process (jobs 1) or in a pool. The
        caller writes each row before this resumes (a dependent run sees it finished)."""
        if self.jobs == 1 or len(runs) <= 1:
            yield from self._execute_here(runs, needs)
            return
        import multiprocessing

        saved = os.environ.get("OMP_NUM_THREADS")
        if self.threads:  # inherited by the spawned workers before they import torch
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
        try:
            yield from self._execute_in_pool(runs, needs, multiprocessing.get_context("spawn"))
        finally:  # the caller's environment as it was (a test process runs other tests after this)
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved

    def _execute_here(self, runs: list[Run], needs: Callable[[Run], Sequence[Run]]):
        """Jobs 1: in this process, with `threads` torch threads (restored afterwards); the process
        environment is left alone (torch read it at import)."""
        import torch

        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        waiting = list(runs)
        try:
            while waiting:
                run, error = self._next(waiting, (), needs)
                if run is None:
                    yield from self._blocked(waiting)
                    return
                waiting.remove(run)
                if error is not None:
                    yield run, error
                    continue
                try:
                    yield run, _timed(self.work, run)
                except Exception as exc:  # one failed run must not stop the others
                    traceback.print_exc()
                    yield run, exc
        finally:
            torch.set_num_threads(previous)

    def _execute_in_pool(self, runs: list[Run], needs: Callable[[Run], Sequence[Run]], context):
        waiting, futures = list(runs), {}
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(runs)), mp_context=context,
                                 initializer=_init_worker, initargs=(self.threads,)) as pool:
            while waiting or futures:
                while waiting and len(futures) < self.jobs:
                    run, error = self._next(waiting, set(futures.values()), needs)
                    if run is None:
                        break
                    waiting.remove(run)
                    if error is not None:
                        yield run, error
                    else:
                        futures[pool.submit(_timed, self.work, run)] = run
                if not futures:
                    yield from self._blocked(waiting)
                    return
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    run, exc = futures.pop(future), future.exception()
                    yield run, exc if exc is not None else future.result()


def select_best(rows: Sequence[dict], metric: str = "val_recall_at_1", tie_break: str = "val_map_at_r",
                group: Callable[[dict], object] = lambda r: (r["method"], r["epochs"])) -> tuple[object, list[dict]]:
    """The best candidate by the mean of `metric` (then `tie_break`) over its rows (e.g. its select
    models and seeds), and every candidate's means, best first. Only `val_*` metrics are accepted:
    a choice is never made on the test split."""
    for name in (metric, tie_break):
        if not name.startswith("val_"):
            raise ValueError(f"select_best: {name!r} is not a validation metric (val_*); choices are made on "
                             "the validation split only")
    by: dict[object, list[dict]] = {}
    for row in rows:
        if row.get("phase", "select") != "select":
            raise ValueError(f"select_best: row {row.get('run')} is not a select-phase row")
        by.setdefault(group(row), []).append(row)
    if not by:
        raise ValueError("select_best: no candidate rows")

    def mean(rs: list[dict], key: str) -> float:
        values = [r[key] for r in rs if r.get(key) is not None]
        return sum(values) / len(values) if values else float("-inf")

    table = [{"candidate": key, metric: mean(rs, metric), tie_break: mean(rs, tie_break), "runs": len(rs)}
             for key, rs in by.items()]
    table.sort(key=lambda t: (-t[metric], -t[tie_break]))
    return table[0]["candidate"], table
