"""Model recipes shared by the bench scripts, so that each bench reuses the others' runs.

Every bench trains into runs/bench/<name>; `train(cfg, resume=True)` returns at once when a run
with the same config has finished, so the paragon is trained once for all benches.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hetsearch.config import TrainRunConfig, load_config  # noqa: E402

BENCH_RUNS = "runs/bench"
CONFIGS = ROOT / "configs" / "fashion_mnist"
LIGHT_MODELS = ("mobilenetv3_small", "shufflenetv2_x0_5")
LIGHT_EPOCHS = 6


def runs_and_overrides(args, quick_overrides: list[str]) -> tuple[str, list[str]]:
    """The runs folder and the config overrides every model of a bench gets (--quick, --device)."""
    runs = f"{BENCH_RUNS}_quick" if args.quick else BENCH_RUNS
    extra = [*quick_overrides, f"output_dir={runs}"] if args.quick else []
    if args.device:
        extra.append(f"runtime.device={args.device}")
    return runs, extra


def paragon_config(extra: list[str] | None = None, config: str = "gallery.yaml") -> TrainRunConfig:
    return load_config(TrainRunConfig, CONFIGS / config, [f"output_dir={BENCH_RUNS}", *(extra or [])])


def light_config(model: str, method: str, epochs: int = LIGHT_EPOCHS, extra: list[str] | None = None) -> TrainRunConfig:
    """A light query model trained with compatibility `method` (none = independent) against the paragon."""
    gallery = f"{BENCH_RUNS}/gallery/model.pt" if method != "none" else "null"
    name = f"{model}_{'independent' if method == 'none' else method}"
    return load_config(TrainRunConfig, CONFIGS / f"query_{model}.yaml",
                       [f"output_dir={BENCH_RUNS}", f"name={name}", f"train.epochs={epochs}",
                        f"compat.method={method}", f"compat.gallery_model={gallery}", *(extra or [])])
