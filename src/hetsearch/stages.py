"""The pipeline's stage types, shared by `hetsearch.pipeline` and the packages that add stages
(`hetsearch.nas.pipeline`): the pipeline config, one stage, and the context stages read from.

Below both in the layer order (docs/architecture.md, "Layers"), so `nas` can build stages
without importing the pipeline that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from hetsearch.config import RuntimeConfig, TrainRunConfig
from hetsearch.data import DataConfig, Splits
from hetsearch.errors import ConfigError
from hetsearch.utils.typed_config import apply_overrides, from_dict, read_yaml, to_dict


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


def _always_current() -> bool:
    return True


@dataclass
class Stage:
    name: str
    output: Path                     # the stage is done when this exists ...
    run: Callable[[], Any]
    # ... and this says it is still current: False reruns the stage; a stage whose finished output
    # must not be silently replaced raises ConfigError instead (e.g. a model trained with other settings)
    is_current: Callable[[], bool] = _always_current


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
        """A stage's TrainRunConfig with the pipeline's data, runtime and output folder imposed.

        The stage's ``overrides`` apply last, so ``runtime.*`` ones (a seed, threads) take effect;
        ``data.*`` ones are refused: every stage must train and be scored on the same data."""
        path = Path(self.cfg.base_dir) / stage.config
        data = read_yaml(path)
        data["data"] = to_dict(self.cfg.data)
        data["runtime"] = to_dict(self.cfg.runtime)
        shared = [o for o in stage.overrides if o.split("=", 1)[0].strip().startswith("data.")]
        if shared:
            raise ConfigError(f"stage {stage.name or path.stem}: override {shared[0]!r}: every stage uses the "
                              "pipeline's data section; set it there (pipeline YAML `data:`) instead")
        apply_overrides(data, list(stage.overrides))
        data["output_dir"] = str(self.output_dir)
        data["name"] = stage.name or data.get("name") or path.stem
        if compat_gallery and "compat" in data:
            # independent models too: their per-epoch M(q, g) is logged against this gallery
            data["compat"]["gallery_model"] = str(self.gallery_model)
        try:
            return from_dict(TrainRunConfig, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
