"""CMP-NAS stages of `hetsearch pipeline`: supernet -> search -> retrain (per budget).

The pipeline config's `nas:` mapping:

    nas:
      supernet: {config: supernet.yaml, overrides: [train.epochs=2]}   # a training config
      search:   {config: search.yaml, overrides: [search.generations=3]}
      retrain:  {config: retrain.yaml, overrides: [train.epochs=3]}   # a training config
      budgets_mflops: [1.9, 1.0]   # one search + one retrained query model per budget
                                   # (empty: a single search with search.yaml's own budget)
      retrain_init: scratch        # scratch (paper) | supernet (fine-tune inherited weights)

Stage folders: `<supernet name>`, `<search name>_<budget>mf`, `<retrain name>_<budget>mf`
(e.g. cmpnas_supernet, cmpnas_search_1.9mf, cmpnas_1.9mf). The pipeline's data, runtime and
output folder are imposed on all of them; the supernet and the retrained models are trained
against the pipeline's gallery model (when their compat method is not none) and the search
scores heterogeneous accuracy against it. Retrained models join the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hetsearch.errors import ConfigError
from hetsearch.nas.retrain import INITS, retrain
from hetsearch.nas.runner import SearchRunConfig, run_search
from hetsearch.nas.search import BEST_JSON
from hetsearch.stages import PipelineContext, Stage, StageConfig
from hetsearch.train import FINAL_MODEL, train
from hetsearch.utils.typed_config import apply_overrides, from_dict, read_yaml, to_dict


@dataclass
class NasPipelineConfig:
    supernet: StageConfig = field(default_factory=lambda: StageConfig(config="supernet.yaml"))
    search: StageConfig = field(default_factory=lambda: StageConfig(config="search.yaml"))
    retrain: StageConfig = field(default_factory=lambda: StageConfig(config="retrain.yaml"))
    budgets_mflops: list = field(default_factory=list)
    retrain_init: str = "scratch"

    def validate(self) -> None:
        if self.retrain_init not in INITS:
            raise ConfigError(f"nas.retrain_init: got {self.retrain_init!r}, expected one of {', '.join(INITS)}")
        for b in self.budgets_mflops:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or b <= 0:
                raise ConfigError(f"nas.budgets_mflops: expected positive numbers, got {self.budgets_mflops!r}")


def parse_nas_config(data: dict) -> NasPipelineConfig:
    data = dict(data or {})
    for key in ("supernet", "search", "retrain"):
        if key in data and isinstance(data[key], dict):
            data[key] = from_dict(StageConfig, data[key], f"nas.{key}")
    cfg = NasPipelineConfig(**{k: v for k, v in data.items() if k in NasPipelineConfig.__dataclass_fields__})
    unknown = sorted(set(data) - set(NasPipelineConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"nas: unknown key(s) {', '.join(unknown)}; valid keys: "
                          f"{', '.join(NasPipelineConfig.__dataclass_fields__)}")
    cfg.validate()
    return cfg


def budget_tag(mflops: float) -> str:
    return f"{mflops:g}mf"


def _stage_name(ctx: PipelineContext, stage: StageConfig, default: str) -> str:
    if stage.name:
        return stage.name
    return read_yaml(Path(ctx.cfg.base_dir) / stage.config).get("name") or default


def search_config(ctx: PipelineContext, stage: StageConfig, name: str, supernet_path: Path,
                  budget: float | None) -> SearchRunConfig:
    path = Path(ctx.cfg.base_dir) / stage.config
    data = read_yaml(path)
    apply_overrides(data, list(stage.overrides))
    data.update(name=name, output_dir=str(ctx.output_dir), supernet=str(supernet_path),
                gallery_model=str(ctx.gallery_model), data=to_dict(ctx.cfg.data), runtime=to_dict(ctx.cfg.runtime))
    if budget is not None:
        data.setdefault("search", {}).update(cost="mflops", max_cost=float(budget))
    try:
        return from_dict(SearchRunConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def nas_stages(ctx: PipelineContext) -> list[Stage]:
    cfg = parse_nas_config(ctx.cfg.nas)
    supernet_cfg = ctx.stage_config(cfg.supernet)
    if supernet_cfg.model.backbone != "cmpnas_supernet":
        raise ConfigError(f"nas.supernet ({cfg.supernet.config}): model.backbone must be cmpnas_supernet, "
                          f"got {supernet_cfg.model.backbone!r}")
    supernet_cfg.model.backbone_args.setdefault("sample_embedding_dim", supernet_cfg.model.embedding_dim)
    supernet_path = supernet_cfg.run_dir / FINAL_MODEL
    stages = [Stage(supernet_cfg.name, supernet_path,
                    lambda: train(supernet_cfg, resume=True, splits=ctx.splits))]

    search_base = _stage_name(ctx, cfg.search, "cmpnas_search")
    retrain_base = _stage_name(ctx, cfg.retrain, "cmpnas")
    budgets = [float(b) for b in cfg.budgets_mflops] or [None]
    for budget in budgets:
        suffix = f"_{budget_tag(budget)}" if budget is not None else ""
        run_cfg = search_config(ctx, cfg.search, search_base + suffix, supernet_path, budget)
        best_path = run_cfg.run_dir / BEST_JSON
        stages.append(Stage(run_cfg.name, best_path,
                            lambda run_cfg=run_cfg: run_search(run_cfg, splits=ctx.splits, resume=True)))
        retrain_stage = StageConfig(config=cfg.retrain.config, name=retrain_base + suffix,
                                    overrides=list(cfg.retrain.overrides))
        retrain_cfg = ctx.stage_config(retrain_stage)
        output = retrain_cfg.run_dir / FINAL_MODEL
        ctx.models[retrain_cfg.name] = output
        stages.append(Stage(retrain_cfg.name, output,
                            lambda retrain_cfg=retrain_cfg, best_path=best_path: retrain(
                                retrain_cfg, best_path, init=cfg.retrain_init, resume=True, splits=ctx.splits)))
    return stages
