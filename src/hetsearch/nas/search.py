"""Architecture search under a cost budget: the loop around a registered strategy.

The loop knows only a search space, an efficiency predictor `cost(arch) -> float` (registered by
name in `hetsearch.nas.efficiency`: MFLOPs from the cost table, or a latency table), an accuracy
predictor `evaluate(arch) -> record` and a reward `reward(record) -> float`
(`hetsearch.nas.rewards`); it never sees models or data, so tests drive it with synthetic rewards.

Each generation, the strategy (`search.strategy`, registered in `hetsearch.nas.strategies`:
`evolution` (SPOS) or `random`) proposes new candidates from the `parents` best architectures
found so far, through budget-legal operators (`Moves`: random draws, a draw over the budget
narrowed until it fits, mutations with `mutation_prob`, crossovers); every candidate is new
(never evaluated before) and within budget. Both built-in strategies spend the same number of
evaluations (`population x generations`).

State is written atomically after every generation (`state.json`); a run resumes from it and
ends with the same result as an uninterrupted one (each generation's random stream depends only
on the seed and the generation; finished evaluations are reused, never recomputed).
`evaluated.jsonl` logs every evaluation (rewritten from the state on resume, so it has no
duplicates); `best.json` / `best.yaml` hold the winner.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import yaml

from hetsearch.errors import ConfigError
from hetsearch.nas.efficiency import check_cost
from hetsearch.nas.space import Architecture, SearchSpace
from hetsearch.nas.strategies import Moves, check_strategy, create_strategy
from hetsearch.utils.io import append_jsonl, atomic_write_json, atomic_write_text

STATE_FILE, LOG_FILE, BEST_JSON, BEST_YAML = "state.json", "evaluated.jsonl", "best.json", "best.yaml"


@dataclass
class SearchConfig:
    strategy: str = "evolution"      # a registered strategy: evolution | random (same number of evaluations)
    population: int = 50
    generations: int = 20
    parents: int = 10                # top-k architectures that parent mutations and crossovers
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1
    cost: str = "mflops"             # a registered cost: mflops (cost table) | latency_ms (needs a latency table)
    max_cost: Optional[float] = None  # budget in `cost` units (None: unconstrained)
    min_cost: Optional[float] = None
    seed: int = 0
    max_tries: int = 2000            # draws per wanted candidate before giving up on it (rejection sampling)

    def validate(self) -> None:
        check_strategy(self.strategy)
        check_cost(self.cost)
        for name in ("population", "generations", "parents"):
            if getattr(self, name) < 1:
                raise ConfigError(f"search.{name}: expected >= 1, got {getattr(self, name)}")
        if self.mutations < 0 or self.crossovers < 0 or self.mutations + self.crossovers > self.population:
            raise ConfigError(f"search.mutations + search.crossovers ({self.mutations} + {self.crossovers}) must be "
                              f"between 0 and search.population ({self.population})")
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise ConfigError(f"search.mutation_prob: expected 0..1, got {self.mutation_prob}")
        if self.max_cost is not None and self.min_cost is not None and self.min_cost > self.max_cost:
            raise ConfigError(f"search.min_cost ({self.min_cost}) > search.max_cost ({self.max_cost})")

    @property
    def evaluations(self) -> int:
        return self.population * self.generations


@dataclass
class SearchResult:
    best: dict                       # the best record (arch, cost, reward, metrics, generation)
    records: list[dict]              # every evaluation, in order
    generations_done: int
    seconds: float
    out_dir: Optional[Path] = None
    top: list[str] = field(default_factory=list)

    @property
    def best_arch(self) -> Architecture:
        return Architecture.from_id(self.best["arch"])


def _generator(seed: int, generation: int, strategy: str) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + generation * 7_919 + zlib.crc32(strategy.encode())) % 2**63)


class Searcher:
    """One search run (see the module doc). `evaluate(arch)` returns a dict of metrics;
    `reward(record)` turns it into the scalar that is maximised; `cfg.strategy` proposes."""

    def __init__(self, space: SearchSpace, cost: Callable[[Architecture], float],
                 evaluate: Callable[[Architecture], dict], reward: Callable[[dict], float], cfg: SearchConfig,
                 out_dir: str | Path | None = None, log: Callable[[str], None] | None = print,
                 meta: dict | None = None, best_extras: Callable[[dict], dict] | None = None):
        cfg.validate()
        self.space, self.cost, self.evaluate, self.reward, self.cfg = space, cost, evaluate, reward, cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log = log or (lambda message: None)
        self.meta = meta or {}
        # more fields for best.json (e.g. the runner's backbone_args), computed from the winner's
        # record before the file is written: best.json has one writer and is written once
        self.best_extras = best_extras
        self.records: list[dict] = []
        self.by_id: dict[str, dict] = {}
        self.generation = 0
        self.seconds = 0.0
        self.strategy = create_strategy(cfg)

    # ------------------------------------------------------------------ candidates
    def top(self, k: int | None = None) -> list[dict]:
        k = self.cfg.parents if k is None else k
        return sorted(self.records, key=lambda r: (-r["reward"], r["arch"]))[:k]

    def moves(self, generation: int) -> Moves:
        """The budget-legal operators of `generation`, with its own seeded random stream."""
        cfg = self.cfg
        return Moves(self.space, self.cost, _generator(cfg.seed, generation, cfg.strategy), known=self.by_id,
                     max_cost=cfg.max_cost, min_cost=cfg.min_cost, max_tries=cfg.max_tries,
                     mutation_prob=cfg.mutation_prob)

    def candidates(self, generation: int) -> list[tuple[Architecture, str]]:
        """The new architectures of `generation`, each with how it was made."""
        parents = [Architecture.from_id(r["arch"]) for r in self.top()] if generation > 0 else []
        return self.strategy.propose(generation, parents, self.moves(generation))

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        return {"format": "hetsearch.nas.search/v1", "config": asdict(self.cfg), "space": self.space.to_dict(),
                "meta": self.meta, "generation": self.generation, "seconds": round(self.seconds, 3),
                "records": self.records}

    def _load(self) -> bool:
        path = self.out_dir / STATE_FILE
        if not path.exists():
            return False
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc}); delete it to restart the search") from None
        if state.get("config") != asdict(self.cfg) or state.get("space") != self.space.to_dict():
            raise ConfigError(f"{path}: cannot resume, the search config or space differs from the saved one; "
                              "use a new run name or delete the folder")
        if state.get("meta", {}) != self.meta:
            raise ConfigError(f"{path}: cannot resume, the saved search used other inputs "
                              f"({state.get('meta')}); use a new run name or delete the folder")
        self.records = state["records"]
        self.by_id = {r["arch"]: r for r in self.records}
        self.generation, self.seconds = state["generation"], state["seconds"]
        # the log may hold evaluations of an interrupted generation: rewrite it from the state
        atomic_write_text(self.out_dir / LOG_FILE, "".join(json.dumps(r) + "\n" for r in self.records))
        return True

    # ------------------------------------------------------------------ loop
    def run(self, resume: bool = True) -> SearchResult:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if resume and self._load():
                self.log(f"[search] resuming after generation {self.generation}/{self.cfg.generations} "
                         f"({len(self.records)} evaluations)")
            elif (self.out_dir / STATE_FILE).exists() or (self.out_dir / LOG_FILE).exists():
                raise ConfigError(f"{self.out_dir} already holds a search; resume it or choose another folder")
        while self.generation < self.cfg.generations:
            start = time.perf_counter()
            new = self.candidates(self.generation)
            if not new:
                self.log(f"[search] generation {self.generation}: no new architecture within budget; stopping")
                break
            for arch, origin in new:
                record = dict(self.evaluate(arch))
                record.update(arch=arch.id, cost=self.cost(arch), generation=self.generation, origin=origin)
                record["reward"] = self.reward(record)
                self.records.append(record)
                self.by_id[arch.id] = record
                if self.out_dir is not None:
                    append_jsonl(self.out_dir / LOG_FILE, record)
            self.generation += 1
            self.seconds += time.perf_counter() - start
            best = self.top(1)[0]
            self.log(f"[search] generation {self.generation}/{self.cfg.generations}: {len(new)} evaluated, "
                     f"best reward {best['reward']:.4f} ({best['arch']}, {best['cost']:.3f} {self.cfg.cost})")
            if self.out_dir is not None:
                atomic_write_json(self.out_dir / STATE_FILE, self._state())
        if not self.records:
            raise ConfigError(f"search: no architecture of the space satisfies the budget "
                              f"{self.cfg.min_cost}..{self.cfg.max_cost} {self.cfg.cost}")
        result = SearchResult(best=self.top(1)[0], records=self.records, generations_done=self.generation,
                              seconds=self.seconds, out_dir=self.out_dir, top=[r["arch"] for r in self.top()])
        if self.out_dir is not None:
            write_best(self.out_dir, result, self.cfg, self.meta, self.best_extras)
        return result


def write_best(out_dir: Path, result: SearchResult, cfg: SearchConfig, meta: dict,
               extras: Callable[[dict], dict] | None = None) -> dict:
    """Write `best.yaml`, then `best.json` (the file later stages wait for), each atomically and
    complete: `extras(best)` adds its fields first, so no second writer rewrites the file."""
    best = {"arch": result.best["arch"], **{k: v for k, v in result.best.items() if k != "arch"},
            "strategy": cfg.strategy, "evaluations": len(result.records), "generations": result.generations_done,
            "search_seconds": round(result.seconds, 2), "budget": {"cost": cfg.cost, "max": cfg.max_cost, "min": cfg.min_cost},
            "top": result.top, "inputs": meta}
    if extras is not None:
        best.update(extras(best))
    atomic_write_text(out_dir / BEST_YAML, yaml.safe_dump(best, sort_keys=False))
    atomic_write_json(out_dir / BEST_JSON, best)
    return best


def search(space: SearchSpace, cost: Callable[[Architecture], float], evaluate: Callable[[Architecture], dict],
           reward: Callable[[dict], float], cfg: SearchConfig, out_dir: str | Path | None = None,
           resume: bool = True, log: Callable[[str], None] | None = print, meta: dict | None = None,
           best_extras: Callable[[dict], dict] | None = None) -> SearchResult:
    return Searcher(space, cost, evaluate, reward, cfg, out_dir, log, meta, best_extras).run(resume=resume)
