import pytest
import torch
import torch.nn.functional as F

from hetsearch.errors import CheckpointError, ConfigError
from hetsearch.models import create_model, list_backbones, load_checkpoint, save_checkpoint
from hetsearch.models.heads import CosineClassifier


@pytest.mark.parametrize("backbone, args", [
    ("resnet18", {"width": 8}), ("mobilenetv3_small", {"width": 0.5}), ("shufflenetv2_x0_5", {}),
])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_embedding_shapes_and_normalisation(backbone, args, in_chans):
    torch.manual_seed(0)
    model = create_model(backbone, num_classes=5, embedding_dim=32, in_chans=in_chans, image_size=28,
                         backbone_args=args).eval()
    emb = model(torch.rand(3, in_chans, 28, 28))
    assert emb.shape == (3, 32)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)


def test_registry_lists_builtins_and_rejects_unknown():
    assert {"resnet18", "mobilenetv3_small", "shufflenetv2_x0_5"} <= set(list_backbones())
    with pytest.raises(ConfigError, match="unknown backbone 'resnet19'"):
        create_model("resnet19", num_classes=2)
    with pytest.raises(ConfigError, match="backbone_args"):
        create_model("resnet18", num_classes=2, backbone_args={"depth_multiplier": 2})
    # timm has MobileNetV3 only at some widths: the error names the field and the valid values
    with pytest.raises(ConfigError, match=r"backbone_args.width=0.6 .*0.5, 0.75, 1.0"):
        create_model("mobilenetv3_small", num_classes=2, backbone_args={"width": 0.6})


def test_small_stem_keeps_resolution_for_small_inputs():
    model = create_model("resnet18", num_classes=2, backbone_args={"width": 4}, image_size=28)
    assert model.backbone.conv1.stride == (1, 1)
    big = create_model("resnet18", num_classes=2, backbone_args={"width": 4}, image_size=224)
    assert big.backbone.maxpool is not None and not isinstance(big.backbone.maxpool, torch.nn.Identity)


def test_norm_softmax_logits_are_scaled_cosines():
    head = CosineClassifier(3, 2, "norm_softmax", scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]))
    logits = head(torch.tensor([[3.0, 0.0]]), torch.tensor([0]))
    assert torch.allclose(logits, torch.tensor([[10.0, 0.0, -10.0]]))


@pytest.mark.parametrize("head, pml_name", [("cosface", "CosFaceLoss"), ("arcface", "ArcFaceLoss")])
def test_margin_losses_match_pytorch_metric_learning(head, pml_name):
    from pytorch_metric_learning import losses

    torch.manual_seed(0)
    num_classes, dim = 7, 16
    emb, labels = torch.randn(32, dim), torch.randint(0, num_classes, (32,))
    ours = CosineClassifier(num_classes, dim, head, scale=30.0, margin=0.3 if head == "cosface" else 0.4)
    pml = getattr(losses, pml_name)(num_classes, dim, margin=0.3 if head == "cosface" else 0.4 * 180 / torch.pi,
                                    scale=30.0)
    with torch.no_grad():
        pml.W.copy_(ours.weight.t())
    assert torch.allclose(F.cross_entropy(ours(emb, labels), labels), pml(emb, labels), atol=1e-4)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, embedding_dim=16, backbone_args={"width": 4}).eval()
    meta = save_checkpoint(tmp_path / "m.pt", model, classes=["a", "b", "c"], compatible_with="g-1",
                           compatibility="bct", config={"x": 1})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.meta.model_id == meta.model_id and meta.model_id.startswith("resnet18-d16-")
    assert loaded.meta.compatible_with == "g-1" and loaded.meta.classes == ["a", "b", "c"]
    assert loaded.meta.flops > 0 and loaded.meta.params > 0
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(x), loaded.model(x))
    # the id is a function of the weights
    with torch.no_grad():
        model.embedding_head.proj.weight.add_(1e-3)
    assert save_checkpoint(tmp_path / "m2.pt", model, classes=["a", "b", "c"]).model_id != meta.model_id


def test_backbone_embedding_layer(tmp_path):
    # the embedding is the pooled backbone features (32 wide at width 4); the projection head
    # (16 wide) sits between the embedding and the classifier
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, embedding_dim=32, backbone_args={"width": 4},
                         embedding_layer="backbone", projection_dim=16).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        features = model.backbone((x - model.input_mean) / model.input_std)
        torch.testing.assert_close(model(x), F.normalize(features, dim=1))
        assert model.classifier_input(model(x, normalize=False)).shape == (4, 16)
        assert model.classifier.weight.shape == (3, 16)
    save_checkpoint(tmp_path / "m.pt", model, classes=["a", "b", "c"])
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.meta.spec.embedding_layer == "backbone" and torch.equal(loaded.model(x), model(x))
    # the default embeds the projection; a wrong width or layer name is refused with the fix
    head_model = create_model("resnet18", num_classes=3, embedding_dim=16, backbone_args={"width": 4}).eval()
    with torch.no_grad():
        assert torch.equal(head_model.classifier_input(head_model(x, normalize=False)), head_model(x, normalize=False))
    with pytest.raises(ConfigError, match="model.embedding_dim=32"):
        create_model("resnet18", num_classes=3, embedding_dim=16, backbone_args={"width": 4}, embedding_layer="backbone")
    with pytest.raises(ConfigError, match="model.embedding_layer"):
        create_model("resnet18", num_classes=3, backbone_args={"width": 4}, embedding_layer="neck")


def test_corrupt_and_foreign_checkpoints_are_named(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a hetsearch model checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
