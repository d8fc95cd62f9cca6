"""Per-channel input normalisation in ModelSpec, and backbones started from local weights files
that the test writes itself (nothing is downloaded)."""

from __future__ import annotations

import timm
import torch
import torchvision
import pytest

import hetsearch.nas  # noqa: F401  (registers the cmpnas_supernet backbone)
from hetsearch.errors import ConfigError
from hetsearch.models import create_model, load_checkpoint, save_checkpoint
from hetsearch.models.embedding_model import ModelSpec


def test_default_norm_comes_from_the_backbones_pretrained_config() -> None:
    rgb = create_model("mobilenetv3_small", num_classes=2, in_chans=3, image_size=32, backbone_args={"width": 0.5})
    assert rgb.spec.mean == pytest.approx([0.485, 0.456, 0.406]) and rgb.spec.std == pytest.approx([0.229, 0.224, 0.225])
    assert tuple(rgb.input_mean.shape) == (1, 3, 1, 1)
    grey = create_model("shufflenetv2_x0_5", num_classes=2, in_chans=1, image_size=32)
    assert grey.spec.mean == pytest.approx([(0.485 + 0.456 + 0.406) / 3])
    nas = create_model("cmpnas_supernet", num_classes=2, in_chans=3, image_size=16)
    assert nas.spec.mean == [0.5] * 3 and nas.spec.std == [0.25] * 3  # no pretrained config: the old values
    own = create_model("resnet18", num_classes=2, in_chans=3, image_size=16, backbone_args={"width": 4},
                       mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
    assert own.input_mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="model.mean.*3 number"):
        create_model("resnet18", num_classes=2, in_chans=3, backbone_args={"width": 4}, mean=[0.5])


def test_per_channel_norm_is_applied_per_channel() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=2, in_chans=3, image_size=16, backbone_args={"width": 4},
                         mean=[0.2, 0.5, 0.8], std=[0.1, 0.2, 0.4]).eval()
    x = torch.rand(2, 3, 16, 16)
    expected = model.backbone((x - torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1)) / torch.tensor([0.1, 0.2, 0.4]).view(1, 3, 1, 1))
    assert torch.allclose(model(x, normalize=False), model.embedding_head(expected), atol=1e-6)


def test_old_scalar_checkpoints_load_with_identical_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    old = create_model("resnet18", num_classes=3, in_chans=1, image_size=16, backbone_args={"width": 4},
                       mean=0.5, std=0.25).eval()
    assert old.input_mean.ndim == 0  # a scalar stays a scalar
    meta = save_checkpoint(tmp_path / "old.pt", old, classes=["a", "b", "c"])
    assert meta.spec.mean == 0.5 and meta.spec.std == 0.25
    # what a checkpoint from before this change holds: the scalar fields in its spec
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    assert payload["meta"]["spec"]["mean"] == 0.5
    loaded = load_checkpoint(tmp_path / "old.pt").model
    x = torch.rand(4, 1, 16, 16)
    legacy = old.backbone((x - 0.5) / 0.25)  # the pre-change forward
    assert torch.equal(loaded(x, normalize=False), loaded.embedding_head(legacy))
    assert torch.equal(loaded(x), old(x))


def test_resolved_norm_is_stored_in_checkpoints(tmp_path) -> None:
    model = create_model("mobilenetv3_small", num_classes=2, in_chans=3, image_size=32, backbone_args={"width": 0.5})
    save_checkpoint(tmp_path / "m.pt", model, classes=["a", "b"])
    spec = load_checkpoint(tmp_path / "m.pt").meta.spec
    assert spec.mean == pytest.approx([0.485, 0.456, 0.406]) and isinstance(spec, ModelSpec)


def test_pretrained_timm_weights_adapted_to_one_channel(tmp_path, capsys) -> None:
    torch.manual_seed(1)
    reference = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10, in_chans=3)
    path = tmp_path / "mnv3.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("mobilenetv3_small", num_classes=4, in_chans=1, image_size=32,
                         backbone_args={"width": 0.5}, pretrained_file=str(path))
    ours, theirs = model.backbone.state_dict(), reference.state_dict()
    assert torch.equal(ours["conv_stem.weight"], theirs["conv_stem.weight"].sum(1, keepdim=True))
    for name in ("blocks.2.0.conv_pw.weight", "conv_head.weight", "bn1.running_var"):
        assert torch.equal(ours[name], theirs[name])
    assert "first conv adapted to 1 channel(s): conv_stem.weight" in capsys.readouterr().err


def test_pretrained_torchvision_weights_and_errors(tmp_path) -> None:
    torch.manual_seed(2)
    reference = torchvision.models.shufflenet_v2_x0_5(weights=None)
    path = tmp_path / "shuffle.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = create_model("shufflenetv2_x0_5", num_classes=4, in_chans=3, image_size=32, pretrained_file=str(path))
    assert torch.equal(model.backbone.net.stage2[0].branch1[0].weight, reference.stage2[0].branch1[0].weight)
    assert torch.equal(model.backbone.net.conv1[0].weight, reference.conv1[0].weight)
    with pytest.raises(ConfigError, match="model.pretrained_file.*no such file"):
        create_model("shufflenetv2_x0_5", num_classes=4, in_chans=3, pretrained_file=str(tmp_path / "none.pth"))
    torch.save({"x.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="no tensor matches backbone 'shufflenetv2_x0_5'"):
        create_model("shufflenetv2_x0_5", num_classes=4, in_chans=3, pretrained_file=str(tmp_path / "other.pth"))
