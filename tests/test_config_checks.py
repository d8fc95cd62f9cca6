"""The whole run config is checked before any data is read (issue 22.3): registered names, the
compatibility section, the gallery model file and what its checkpoint's metadata says; each
problem one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hetsearch.config import CompatConfig, TrainRunConfig
from hetsearch.errors import CompatibilityError, ConfigError
from hetsearch.models import create_model, save_checkpoint
from hetsearch.train import Trainer
from hetsearch.train.checks import check_run_config
from hetsearch.utils.typed_config import from_dict

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_method_exits_2_with_one_line_before_any_data_is_read():
    """The issue's acceptance command (its time, under 2 s on a quiet machine, is not asserted)."""
    out = subprocess.run([sys.executable, "-m", "hetsearch.cli", "train",
                          "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml", "compat.method=nonsense"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stdout == "" and "data:" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: compat.method: unknown method 'nonsense'")
    assert "bct" in lines[0] and "contrastive" in lines[0]


def save_gallery(path: Path, **spec) -> Path:
    spec = {"embedding_dim": 8, "in_chans": 1, "image_size": 16, "backbone_args": {"width": 4}, **spec}
    save_checkpoint(path, create_model("resnet18", num_classes=3, **spec).eval(), classes=["a", "b", "c"])
    return path


def run_config(tmp_path: Path, **sections) -> TrainRunConfig:
    """A config whose data cannot be read: a check that passes would end in a DataError."""
    data = {"source": "image_folder", "root": str(tmp_path / "no_such_folder"), "image_size": 16, "channels": 1}
    base = {"output_dir": str(tmp_path / "runs"), "data": data,
            "model": {"backbone": "resnet18", "backbone_args": {"width": 4}, "embedding_dim": 8},
            "runtime": {"device": "cpu", "progress": False}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return from_dict(TrainRunConfig, base)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("sections, match", [
    ({"model": {"backbone": "resnet19"}}, r"^model\.backbone: unknown backbone 'resnet19'; known: .*resnet18"),
    ({"model": {"head": "sphereface"}}, r"^model\.head: unknown head 'sphereface'; known: arcface, cosface"),
    ({"model": {"embedding_layer": "neck"}}, r"^model\.embedding_layer: expected one of head, backbone"),
    ({"train": {"task_loss": "triplet"}}, r"^train\.task_loss: unknown task loss 'triplet'; known: classification"),
    ({"train": {"optimizer": "lamb"}}, r"^train\.optimizer: got 'lamb'"),
    ({"runtime": {"amp": "fp8"}}, r"^runtime\.amp: got 'fp8'"),
    ({"compat": {"method": "bct+l3", "gallery_model": "g.pt"}}, r"^compat\.method: unknown method 'bct\+l3'"),
    ({"compat": {"method": "bct"}}, r"^compat\.gallery_model: method 'bct' needs the path"),
    ({"compat": {"method": "l2", "gallery_model": "missing.pt"}}, r"^compat\.gallery_model: missing\.pt: no such"),
    ({"train": {"task_loss": "none"}}, r"^train\.task_loss=none \(label-free\) needs a compatibility method"),
], ids=["backbone", "head", "embedding_layer", "task_loss", "optimizer", "amp", "method", "no_gallery",
        "gallery_file", "label_free"])
def test_one_line_before_the_data(tmp_path, sections, match):
    cfg = run_config(tmp_path, **sections)
    with pytest.raises(ConfigError, match=match) as exc:
        Trainer(cfg)  # would read the (missing) data set if the check let it through
    one_line(exc)


def test_the_gallery_checkpoint_metadata_is_checked_before_the_data(tmp_path):
    gallery = save_gallery(tmp_path / "gallery.pt")
    cfg = run_config(tmp_path, model={"embedding_dim": 16}, compat={"method": "l2", "gallery_model": str(gallery)})
    with pytest.raises(CompatibilityError, match=r"embeds into 16 dimensions but the gallery model .* into 8; "
                                                 r"set model\.embedding_dim=8") as exc:
        Trainer(cfg)
    one_line(exc)
    cfg = run_config(tmp_path, data={"image_size": 32}, compat={"method": "l2", "gallery_model": str(gallery)})
    with pytest.raises(CompatibilityError, match=r"takes 1x32px images, the gallery model .* 1x16px; "
                                                 r"set data\.channels=1 data\.image_size=16"):
        check_run_config(cfg)


def test_a_term_that_declares_same_head_checks_the_head_early(tmp_path):
    """BCT feeds query embeddings to the gallery's classifier (`same_head`); L2 does not care."""
    gallery = save_gallery(tmp_path / "gallery.pt")
    cfg = run_config(tmp_path, model={"head": "arcface"}, compat={"method": "bct", "gallery_model": str(gallery)})
    with pytest.raises(CompatibilityError, match=r"set model\.head=norm_softmax") as exc:
        check_run_config(cfg)
    one_line(exc)
    check_run_config(run_config(tmp_path, model={"head": "arcface"},
                                compat={"method": "l2", "gallery_model": str(gallery)}))
    # the width of a query model that embeds its backbone features is known only once it is built
    check_run_config(run_config(tmp_path, model={"embedding_layer": "backbone", "embedding_dim": 99},
                                compat={"method": "l2", "gallery_model": str(gallery)}))


@pytest.mark.parametrize("compat, match", [
    ({"method": "bct++l2"}, r"^compat\.method: got 'bct\+\+l2', expected a method name"),
    ({"method": "none+l2"}, r"none \(independent training\) is not combined"),
    ({"method": "l2+l2"}, r"names a method twice"),
    ({"weight": -1}, r"^compat\.weight: got -1"),
    ({"method": "bct+l2", "term_weights": {"distill": 1}}, r"^compat\.term_weights: distill not part of"),
    ({"method": "bct+l2", "term_weights": {"l2": "x"}}, r"^compat\.term_weights: expected numbers"),
    ({"method": "l2", "term_weights": {"l2": 2}}, r"^compat\.term_weights: only for composite methods"),
    ({"bank": {"views": 0}}, r"^compat\.bank\.views: got 0"),
    ({"bank": {"index": "idx", "views": 4}}, r"^compat\.bank\.views: a gallery index holds one view"),
    ({"gallery_aware": {"temperature": 0}}, r"^compat\.gallery_aware\.temperature: got 0"),
    ({"gallery_aware": {"negatives": -2}}, r"^compat\.gallery_aware\.negatives: got -2"),
    ({"gallery_aware": {"anchors": 0}}, r"^compat\.gallery_aware\.anchors: got 0"),
])
def test_compat_config_validate(compat, match):
    """`CompatConfig.validate` runs when the config is loaded: one line per problem."""
    with pytest.raises(ConfigError, match=match) as exc:
        from_dict(CompatConfig, compat)
    one_line(exc)


@pytest.mark.parametrize("override, match", [
    ({"train": {"epochs": "ten"}}, r"^train\.epochs: expected a number, got 'ten'"),
    ({"compat": {"weight": [1]}}, r"^compat\.weight: expected a number"),
    ({"compat": {"method": 3}}, r"^compat\.method: expected a string, got 3"),
    ({"runtime": {"progress": "yes"}}, r"^runtime\.progress: expected true/false"),
])
def test_wrong_types_are_one_line(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match) as exc:
        run_config(tmp_path, **override)
    one_line(exc)
