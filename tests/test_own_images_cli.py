"""Smaller points of the own-images issue: clear CLI answers instead of silent or cryptic ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from index_fixtures import run_cli as run  # noqa: E402  (the CLI as a user runs it; its exit status)
from hetsearch.config import TrainRunConfig
from hetsearch.errors import ConfigError
from hetsearch.eval.grid import _ratio
from hetsearch.utils.typed_config import from_dict


def test_resume_of_a_run_that_never_started_is_an_error(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"name: never\noutput_dir: {tmp_path / 'runs'}\n")
    assert run("train", config, "--resume") == 2
    assert "holds no run to resume" in capsys.readouterr().err


def test_missing_gallery_model_names_the_key(tmp_path: Path) -> None:
    from hetsearch.compat.gallery import FrozenGallery

    with pytest.raises(ConfigError, match="compat.gallery_model: .*nope.pt: no such checkpoint file"):
        FrozenGallery.load(tmp_path / "nope.pt")


def test_grid_flops_ratio_below_one_is_not_zero() -> None:
    assert _ratio(35.46) == "35.5x" and _ratio(0.0282) == "0.028x" and _ratio(None) == "—"


def test_index_build_help_has_no_emoji(capsys) -> None:
    assert run("index", "build", "--help") == 0
    out = capsys.readouterr().out
    assert "fashion_mnist:train" in out and "\N{STEAM LOCOMOTIVE}" not in out and "\N{RAILWAY CAR}" not in out


def test_unlabelled_images_refuse_classifier_training(tmp_path: Path) -> None:
    from hetsearch.train import Trainer

    (tmp_path / "flat").mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 10, 10)).save(tmp_path / "flat" / f"{i}.png")
    cfg = from_dict(TrainRunConfig, {"output_dir": str(tmp_path / "runs"),
                                     "data": {"source": "image_folder", "root": str(tmp_path / "flat"),
                                              "channels": 3, "image_size": 8},
                                     "runtime": {"device": "cpu", "progress": False}})
    with pytest.raises(ConfigError, match="unlabelled images .* no classes to train a classifier"):
        Trainer(cfg)
