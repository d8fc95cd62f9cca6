"""`hetsearch pipeline CONFIG`: the whole system for one data set, top-down.

    gallery model → compatible query models → (CMP-NAS: supernet → search → retrain) → grid → report

Each stage writes its outputs under `output_dir/<stage>/`; a stage whose output exists is skipped,
an interrupted training stage resumes from its last checkpoint. Stage configs are the ordinary
per-stage YAML files (`configs/<dataset>/*.yaml`); the pipeline config only says which ones, with
overrides (e.g. a quick profile with fewer epochs), and imposes one data set and seed on all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from hetsearch.data import make_splits
from hetsearch.eval.grid import run_grid
from hetsearch.nas.pipeline import nas_stages
from hetsearch.stages import PipelineConfig, PipelineContext, Stage, StageConfig
from hetsearch.train import FINAL_MODEL, train
from hetsearch.train.resume import check_resumable
from hetsearch.utils.io import atomic_write_json
from hetsearch.utils.typed_config import from_dict, load_config, read_yaml

__all__ = ["build_stages", "load_pipeline_config", "run_pipeline"]  # the stage types: hetsearch.stages


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    cfg = load_config(PipelineConfig, path, overrides)
    cfg.base_dir = str(Path(path).parent)
    cfg.gallery = cfg.gallery if isinstance(cfg.gallery, StageConfig) else from_dict(StageConfig, cfg.gallery, "gallery")
    cfg.queries = [from_dict(StageConfig, q, f"queries[{i}]") for i, q in enumerate(cfg.queries)]
    return cfg


def _training_stage(ctx: PipelineContext, stage_cfg: StageConfig, compat_gallery: bool = True) -> Stage:
    run_cfg = ctx.stage_config(stage_cfg, compat_gallery)
    output = run_cfg.run_dir / FINAL_MODEL
    ctx.models[run_cfg.name] = output

    def is_current() -> bool:
        """A finished model trained with other settings (e.g. train.epochs) is an error, not reused."""
        saved = run_cfg.run_dir / "config.yaml"
        if saved.exists():
            check_resumable(run_cfg, read_yaml(saved), saved)
        return True

    return Stage(run_cfg.name, output, lambda: train(run_cfg, resume=True, splits=ctx.splits), is_current)


def build_stages(ctx: PipelineContext) -> list[Stage]:
    stages = [_training_stage(ctx, ctx.cfg.gallery, compat_gallery=False)]
    stages += [_training_stage(ctx, q) for q in ctx.cfg.queries]
    if ctx.cfg.nas is not None:
        stages += nas_stages(ctx)
    stages.append(_grid_stage(ctx))
    return stages


def _grid_stage(ctx: PipelineContext) -> Stage:
    out_dir = ctx.output_dir / "grid"

    def run():
        return run_grid(list(ctx.models.values()), ctx.splits, out_dir, device=ctx.cfg.runtime.device)

    def is_current() -> bool:
        """The grid scored exactly the pipeline's current models (a stage added since: score again)."""
        try:
            scored = [m["path"] for m in json.loads((out_dir / "grid.json").read_text())["models"]]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return sorted(scored) == sorted(str(p) for p in ctx.models.values())

    return Stage("grid", out_dir / "grid.json", run, is_current)


def run_pipeline(cfg: PipelineConfig, log: Callable[[str], None] = print) -> PipelineContext:
    started = time.perf_counter()
    splits = make_splits(cfg.data)
    gallery_name = cfg.gallery.name or read_yaml(Path(cfg.base_dir) / cfg.gallery.config).get("name", "gallery")
    ctx = PipelineContext(cfg, splits, gallery_model=Path(cfg.output_dir) / gallery_name / "model.pt")
    ctx.timings_s["load_data"] = round(time.perf_counter() - started, 2)
    for stage in build_stages(ctx):
        if stage.output.exists() and stage.is_current():
            log(f"[pipeline] {stage.name}: done already ({stage.output}), skipped")
            continue
        log(f"[pipeline] {stage.name}: running")
        stage_start = time.perf_counter()
        stage.run()
        ctx.timings_s[stage.name] = round(time.perf_counter() - stage_start, 2)
    ctx.timings_s["total"] = round(time.perf_counter() - started, 2)
    atomic_write_json(ctx.output_dir / "pipeline_summary.json",
                      {"name": cfg.name, "models": {k: str(v) for k, v in ctx.models.items()},
                       "timings_s": ctx.timings_s, "protocol": splits.protocol})
    grid_md = ctx.output_dir / "grid" / "grid.md"
    if grid_md.exists():
        log(grid_md.read_text())
    return ctx
