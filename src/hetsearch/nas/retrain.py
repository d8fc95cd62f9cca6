"""Retrain the searched architecture as an ordinary query model (backbone `cmpnas`).

The retrain stage config (configs/<dataset>/retrain.yaml) is an ordinary training config
(normally with `compat.method: bct` against the gallery model); its backbone is replaced by the
searched architecture from the search's `best.json`. `init: scratch` (default, the paper's
protocol) trains from random weights; `init: supernet` starts from the supernet's weights for
that path (a fine-tune) and is otherwise identical.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hetsearch.config import TrainRunConfig
from hetsearch.data import Splits
from hetsearch.errors import ConfigError
from hetsearch.models import load_checkpoint
from hetsearch.nas.supernet import standalone_from_supernet
from hetsearch.train import TrainResult, Trainer

INITS = ("scratch", "supernet")


def load_best(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no search result (run `hetsearch nas search` first)")
    best = json.loads(path.read_text())
    if "backbone_args" not in best:
        raise ConfigError(f"{path}: has no backbone_args; it was not written by `hetsearch nas search`")
    return best


def retrain_config(base: TrainRunConfig, best: dict) -> TrainRunConfig:
    cfg = copy.deepcopy(base)
    cfg.model.backbone = "cmpnas"
    cfg.model.backbone_args = dict(best["backbone_args"])
    return cfg


class _SupernetInitTrainer(Trainer):
    """Starts from the supernet's weights for the searched path (a checkpoint, if any, still wins)."""

    def __init__(self, cfg: TrainRunConfig, supernet_path: str | Path, arch: str, splits: Splits | None = None):
        super().__init__(cfg, splits=splits)
        self.supernet_path, self.arch = Path(supernet_path), arch

    def _build_model(self):
        model = super()._build_model()
        inherited = standalone_from_supernet(load_checkpoint(self.supernet_path).model, self.arch)
        state = inherited.state_dict()
        if model.classifier.weight.shape != state["classifier.weight"].shape:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        # load_state_dict copies into the parameters: the memory format set by the base stays
        model.load_state_dict(state, strict=False)
        return model.to(self.device)


def retrain(base: TrainRunConfig, best_path: str | Path, *, init: str = "scratch", resume: bool = True,
            splits: Splits | None = None) -> TrainResult:
    if init not in INITS:
        raise ConfigError(f"retrain init: got {init!r}, expected one of {', '.join(INITS)}")
    best = load_best(best_path)
    cfg = retrain_config(base, best)
    if init == "supernet":
        return _SupernetInitTrainer(cfg, best["supernet_path"], best["arch"], splits=splits).fit(resume=resume)
    return Trainer(cfg, splits=splits).fit(resume=resume)
