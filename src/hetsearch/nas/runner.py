"""`hetsearch nas search CONFIG`: search a trained supernet for the best path under a budget.

A search run config (configs/<dataset>/search.yaml) names the supernet and gallery checkpoints,
the data (it must be the supernet's: candidates are calibrated on its training split and scored
on its validation split), the search, the reward and the evaluator. Outputs go to
`output_dir/<name>/`: `state.json` (resume), `evaluated.jsonl`, `best.json` / `best.yaml`
(the winner, with `backbone_args` ready for the `cmpnas` backbone), `search_summary.json` and
`pareto.png` (`hetsearch.nas.plots`: MFLOPs vs heterogeneous vs homogeneous accuracy of every
evaluated path, the winner marked).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from hetsearch.config import RuntimeConfig
from hetsearch.data import DataConfig, Splits, make_splits
from hetsearch.models import load_checkpoint
from hetsearch.nas.efficiency import CostInputs, make_cost
from hetsearch.nas.evaluator import CandidateEvaluator, EvaluatorConfig
from hetsearch.nas.plots import plot_search
from hetsearch.nas.rewards import RewardConfig, make_reward
from hetsearch.nas.search import BEST_JSON, SearchConfig, SearchResult, search
from hetsearch.nas.space import Architecture
from hetsearch.nas.supernet import standalone_args
from hetsearch.utils.device import resolve_device
from hetsearch.utils.io import atomic_write_json, atomic_write_text
from hetsearch.utils.typed_config import dump_yaml, to_dict


@dataclass
class SearchRunConfig:
    name: str = "cmpnas_search"
    output_dir: str = "runs"
    supernet: str = "runs/fashion_mnist/cmpnas_supernet/model.pt"
    gallery_model: str = "runs/fashion_mnist/gallery/model.pt"
    latency_table: Optional[str] = None   # JSON written by `hetsearch nas latency-table` (search.cost: latency_ms)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def cost_predictor(cfg: SearchRunConfig, evaluator: CandidateEvaluator) -> Callable:
    """The efficiency predictor `search.cost` (registered in `hetsearch.nas.efficiency`)."""
    return make_cost(cfg.search.cost, CostInputs(table=evaluator.cost, latency_table=cfg.latency_table))


def _plot(cfg: SearchRunConfig, log: Callable[[str], None]) -> str | None:
    """The search's Pareto plot (a failed drawing is reported and does not fail a finished search)."""
    metric = cfg.reward.metric
    try:
        return str(plot_search(cfg.run_dir, metric=metric))
    except (ImportError, OSError, ValueError, KeyError) as exc:
        log(f"[search] warning: no Pareto plot ({type(exc).__name__}: {exc})")
        return None


def run_search(cfg: SearchRunConfig, splits: Splits | None = None, resume: bool = True,
               log: Callable[[str], None] = print) -> SearchResult:
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    started = time.perf_counter()
    splits = splits if splits is not None else make_splits(cfg.data)
    device = resolve_device(cfg.runtime.device)
    supernet, gallery = load_checkpoint(cfg.supernet), load_checkpoint(cfg.gallery_model)
    if supernet.meta.compatible_with not in (None, gallery.meta.model_id):
        log(f"[search] warning: the supernet was trained to be compatible with {supernet.meta.compatible_with}, "
            f"not with the gallery model {gallery.meta.model_id}")
    evaluator = CandidateEvaluator(supernet.model, gallery.model, splits.train, splits.val, cfg.evaluator, device)
    space = supernet.model.backbone.space
    meta = {"supernet": supernet.meta.model_id, "gallery_model": gallery.meta.model_id,
            "reward": to_dict(cfg.reward), "evaluator": to_dict(cfg.evaluator)}
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.run_dir / "config.yaml", dump_yaml(cfg))
    setup_seconds = time.perf_counter() - started

    def retrain_fields(best: dict) -> dict:
        """What a retrain needs, in best.json itself: the winner's standalone backbone args and
        where it came from."""
        return {"backbone_args": standalone_args(supernet.meta.spec.backbone_args, best["arch"]),
                "supernet_path": str(cfg.supernet), "gallery_model_path": str(cfg.gallery_model),
                "mflops": evaluator.cost.flops(Architecture.from_id(best["arch"])) / 1e6}

    result = search(space, cost_predictor(cfg, evaluator), evaluator, make_reward(cfg.reward), cfg.search,
                    out_dir=cfg.run_dir, resume=resume, log=log, meta=meta, best_extras=retrain_fields)
    best = json.loads((cfg.run_dir / BEST_JSON).read_text())
    pareto = _plot(cfg, log)
    atomic_write_json(cfg.run_dir / "search_summary.json", {
        "best": best["arch"], "reward": best["reward"], "mflops": best["mflops"],
        "evaluations": len(result.records), "search_seconds": round(result.seconds, 2),
        "setup_seconds": round(setup_seconds, 2),
        # cumulative over interrupted attempts: this call's setup + the loop time saved in the state
        "total_seconds": round(setup_seconds + result.seconds, 2),
        "this_call_seconds": round(time.perf_counter() - started, 2),
        "mean_eval_seconds": round(sum(r.get("eval_seconds", 0.0) for r in result.records) / max(1, len(result.records)), 3),
        "pareto_png": pareto,
        "protocol": {"calibration": f"{len(evaluator.calib_batches)} training batches of {cfg.evaluator.calib_batch_size}",
                     "evaluation": f"validation split ({len(evaluator.val)} items), each item queries the others "
                                   "(homogeneous: both sides the candidate; heterogeneous: gallery side the gallery model)"}})
    return result
