"""`hetsearch pipeline CONFIG`: the whole system for one data set, top-down.

    gallery model → compatible query models → (CMP-NAS: supernet → search → retrain) → grid → report

Each stage writes its outputs under `output_dir/<stage>/`; a stage whose output exists is skipped,
an interrupted training stage resumes from its last checkpoint. Stage configs are the ordinary
per-stage YAML files (`configs/<dataset>/*.yaml`); the pipeline config only says which ones, with
overrides (e.g. a quick profile with fewer epochs), and imposes one data set and seed on all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from hetsearch.config import (RuntimeConfig, TrainRunConfig, apply_overrides, from_dict, load_config,
                              read_yaml, to_dict)
from hetsearch.data import DataConfig, Splits, make_splits
from hetsearch.errors import ConfigError
from hetsearch.utils.io import atomic_write_json


@dataclass
class StageConfig:
    config: str                      # stage YAML, relative to the pipeline YAML's folder
    name: Optional[str] = None       # run folder name (default: the stage YAML's `name`)
    overrides: list = field(default_factory=list)


@dataclass
class PipelineConfig:
    name: str = "pipeline"
    output_dir: str = "runs/pipeline"
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    gallery: StageConfig = field(default_factory=lambda: StageConfig(config="gallery.yaml"))
    queries: list = field(default_factory=list)   # list of StageConfig mappings
    nas: Optional[dict] = None                    # CMP-NAS stages (see hetsearch.nas.pipeline)
    base_dir: str = "."                           # set by load_pipeline_config: the YAML's folder


@dataclass
class Stage:
    name: str
    output: Path                     # the stage is done when this exists
    run: Callable[[], Any]


@dataclass
class PipelineContext:
    cfg: PipelineConfig
    splits: Splits
    gallery_model: Path
    models: dict[str, Path] = field(default_factory=dict)   # stage name -> final checkpoint
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    def stage_config(self, stage: StageConfig, compat_gallery: bool = True) -> TrainRunConfig:
        """A stage's TrainRunConfig with the pipeline's data, runtime and output folder imposed."""
        path = Path(self.cfg.base_dir) / stage.config
        data = read_yaml(path)
        apply_overrides(data, list(stage.overrides))
        data["output_dir"] = str(self.output_dir)
        data["name"] = stage.name or data.get("name") or path.stem
        data["data"] = to_dict(self.cfg.data)
        data["runtime"] = to_dict(self.cfg.runtime)
        if compat_gallery and data.get("compat", {}).get("method", "none") != "none":
            data["compat"]["gallery_model"] = str(self.gallery_model)
        try:
            return from_dict(TrainRunConfig, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    cfg = load_config(PipelineConfig, path, overrides)
    cfg.base_dir = str(Path(path).parent)
    cfg.gallery = cfg.gallery if isinstance(cfg.gallery, StageConfig) else from_dict(StageConfig, cfg.gallery, "gallery")
    cfg.queries = [from_dict(StageConfig, q, f"queries[{i}]") for i, q in enumerate(cfg.queries)]
    return cfg


def _training_stage(ctx: PipelineContext, stage_cfg: StageConfig, compat_gallery: bool = True) -> Stage:
    from hetsearch.train import FINAL_MODEL, train

    run_cfg = ctx.stage_config(stage_cfg, compat_gallery)
    output = run_cfg.run_dir / FINAL_MODEL
    ctx.models[run_cfg.name] = output
    return Stage(run_cfg.name, output, lambda: train(run_cfg, resume=True, splits=ctx.splits))


def build_stages(ctx: PipelineContext) -> list[Stage]:
    stages = [_training_stage(ctx, ctx.cfg.gallery, compat_gallery=False)]
    stages += [_training_stage(ctx, q) for q in ctx.cfg.queries]
    if ctx.cfg.nas is not None:
        from hetsearch.nas.pipeline import nas_stages
        stages += nas_stages(ctx)
    stages.append(_grid_stage(ctx))
    return stages


def _grid_stage(ctx: PipelineContext) -> Stage:
    from hetsearch.compat.grid import run_grid

    out_dir = ctx.output_dir / "grid"

    def run():
        return run_grid(list(ctx.models.values()), ctx.splits, out_dir, device=ctx.cfg.runtime.device)

    return Stage("grid", out_dir / "grid.json", run)


def run_pipeline(cfg: PipelineConfig, log: Callable[[str], None] = print) -> PipelineContext:
    started = time.perf_counter()
    splits = make_splits(cfg.data)
    gallery_name = cfg.gallery.name or read_yaml(Path(cfg.base_dir) / cfg.gallery.config).get("name", "gallery")
    ctx = PipelineContext(cfg, splits, gallery_model=Path(cfg.output_dir) / gallery_name / "model.pt")
    ctx.timings_s["load_data"] = round(time.perf_counter() - started, 2)
    for stage in build_stages(ctx):
        if stage.output.exists():
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
