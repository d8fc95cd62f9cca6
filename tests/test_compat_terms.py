"""Tests for the compatibility terms (hetsearch.compat): BCT, pseudo-classifier, L2, distillation.

Tiny synthetic data (1x16x16 images) and width-4 ResNet-18s keep the whole file to seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from hetsearch.compat import build_compat_term, compat_methods
from hetsearch.compat.bct import PSEUDO_CLASSIFIER_FILE, FrozenClassifier, BCTTerm
from hetsearch.compat.feature_matching import cosine_distillation_loss, l2_regression_loss
from hetsearch.compat.gallery import FrozenGallery
from hetsearch.config import CompatConfig, TrainRunConfig
from hetsearch.data import ImageSet, Splits
from hetsearch.errors import CompatibilityError, ConfigError
from hetsearch.models import create_model, load_checkpoint, save_checkpoint
from hetsearch.utils.typed_config import from_dict

CLASSES = ["a", "b", "c", "d"]
SIZE = 16
DIM = 8


def synthetic_set(labels: list[int], seed: int = 0) -> ImageSet:
    """Images whose brightness pattern depends on the class, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels, dtype=torch.int64)
    base = (y[:, None, None, None].float() * 50 + 20).expand(-1, 1, SIZE, SIZE)
    noise = torch.randint(0, 30, (len(labels), 1, SIZE, SIZE), generator=g).float()
    images = (base + noise).clamp(0, 255).to(torch.uint8)
    return ImageSet(images=images, labels=y, classes=list(CLASSES), sources=[f"syn:{i}" for i in range(len(labels))])


def synthetic_splits(train_classes: list[int], per_class: int = 8) -> Splits:
    train = synthetic_set([c for c in train_classes for _ in range(per_class)], seed=1)
    test = synthetic_set([c for c in range(len(CLASSES)) for _ in range(4)], seed=2)
    return Splits(train=train, val=train.subset(slice(0, 0)), query=test, gallery=train, classes=list(CLASSES),
                  train_classes=list(train_classes), test_classes=list(range(len(CLASSES))), exclude_self=False,
                  protocol={"protocol": "synthetic", "train_classes": [CLASSES[c] for c in train_classes]})


def tiny_model(seed: int = 0, **spec):
    torch.manual_seed(seed)
    spec = {"embedding_dim": DIM, "in_chans": 1, "image_size": SIZE, "backbone_args": {"width": 4}, **spec}
    return create_model("resnet18", num_classes=len(CLASSES), **spec)


def save_gallery(path: Path, trained_classes: list[int], seed: int = 0, **spec) -> Path:
    model = tiny_model(seed, **spec).eval()
    save_checkpoint(path, model, classes=CLASSES, config={},
                    extra={"protocol": {"train_classes": [CLASSES[c] for c in trained_classes]}})
    return path


def compat_cfg(method: str, gallery: Path | None, weight: float = 1.0, term_weights: dict | None = None) -> CompatConfig:
    return CompatConfig(method=method, gallery_model=str(gallery) if gallery else None, weight=weight,
                        term_weights=dict(term_weights or {}))


def build(method: str, gallery: Path, spec=None, train_set: ImageSet | None = None, run_dir: Path | None = None,
          term_weights: dict | None = None):
    spec = spec or tiny_model().spec
    train_set = train_set or synthetic_set([0, 0, 1, 1])
    return build_compat_term(compat_cfg(method, gallery, term_weights=term_weights), model_spec=spec,
                             classes=list(CLASSES),
                             train_set=train_set, run_dir=run_dir or gallery.parent / "run", device="cpu")


def sha(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


# ------------------------------------------------------------------------------ registry and config

def test_methods_are_registered():
    assert compat_methods() == ["none", "bank_l2", "bct", "bct_mean", "context", "contrastive", "distill", "l2",
                                "relational"]


def test_none_builds_nothing_and_unknown_or_missing_gallery_is_an_error(tmp_path):
    assert build_compat_term(compat_cfg("none", None)) is None
    with pytest.raises(ConfigError, match="unknown method 'bcd'"):
        build_compat_term(compat_cfg("bcd", tmp_path / "g.pt"))
    with pytest.raises(ConfigError, match="compat.gallery_model"):
        build_compat_term(compat_cfg("bct", None))


# ------------------------------------------------------------------------------ loss values

def test_composite_method_sums_its_weighted_parts(tmp_path):
    gallery_path = save_gallery(tmp_path / "gallery.pt", trained_classes=[0, 1])
    bct, l2 = build("bct", gallery_path), build("l2", gallery_path)
    both = build("bct+l2", gallery_path, term_weights={"l2": 2.5}, run_dir=tmp_path / "run")
    assert both.method == "bct+l2" and both.gallery_model_id == bct.gallery_model_id
    torch.manual_seed(0)
    emb, images, labels = torch.randn(4, DIM), torch.rand(4, 1, SIZE, SIZE), torch.tensor([0, 1, 1, 0])
    expected = bct(emb, images, labels) + 2.5 * l2(emb, images, labels)
    torch.testing.assert_close(both(emb, images, labels), expected)
    assert set(both.last_parts) == {"bct", "l2"}
    summary = json.loads((tmp_path / "run" / "compat.json").read_text())
    assert summary["term_weights"] == {"bct": 1.0, "l2": 2.5}
    assert summary["gallery_model"] == str(gallery_path)


def test_composite_method_errors_name_the_field(tmp_path):
    gallery_path = save_gallery(tmp_path / "gallery.pt", trained_classes=[0, 1])
    with pytest.raises(ConfigError, match="compat.method: unknown method 'bct\\+l3'.*joined by"):
        build("bct+l3", gallery_path)
    with pytest.raises(ConfigError, match="names a method twice"):
        build("l2+l2", gallery_path)
    with pytest.raises(ConfigError, match="none .independent training. is not combined"):
        build("none+l2", gallery_path)
    with pytest.raises(ConfigError, match="compat.term_weights: distill not part of"):
        build("bct+l2", gallery_path, term_weights={"distill": 1.0})
    with pytest.raises(ConfigError, match="compat.term_weights: expected numbers"):
        build("bct+l2", gallery_path, term_weights={"l2": "high"})
    with pytest.raises(ConfigError, match="compat.term_weights: only for composite methods"):
        build("bct", gallery_path, term_weights={"bct": 2.0})


def test_bct_loss_on_a_hand_built_example():
    # two rows (classes 1 and 3 of four); embeddings are unnormalised
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    row_of_label = torch.tensor([-1, 0, -1, 1])
    plain = BCTTerm(FrozenClassifier(weight, row_of_label, "norm_softmax", 1.0, 0.0), "g")
    # equal cosines (0.707 to both rows): uniform over two rows, loss ln 2
    loss = plain(torch.tensor([[3.0, 3.0]]), None, torch.tensor([1]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    # CosFace, scale 4, margin 0.35: target cosine 1 -> 0.65, other row cosine 0
    cosface = BCTTerm(FrozenClassifier(weight, row_of_label, "cosface", 4.0, 0.35), "g")
    loss = cosface(torch.tensor([[0.0, 2.0]]), None, torch.tensor([3]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-4 * 0.65)), rel=1e-5)
    with pytest.raises(CompatibilityError, match=r"label\(s\) \[2\]"):
        plain(torch.tensor([[1.0, 0.0]]), None, torch.tensor([2]))


def test_l2_and_distillation_losses_on_hand_built_examples():
    q, g = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    assert l2_regression_loss(q, g).item() == pytest.approx(2.0)          # mean of (0, 2^2)
    assert cosine_distillation_loss(torch.tensor([[5.0, 0.0]]), torch.tensor([[0.0, 2.0]])).item() == pytest.approx(1.0)
    assert cosine_distillation_loss(torch.tensor([[5.0, 0.0]]), torch.tensor([[2.0, 0.0]])).item() == pytest.approx(0.0)


# ------------------------------------------------------------------------------ frozen classifier rows

def test_bct_keeps_gallery_rows_and_fills_new_classes_with_class_means(tmp_path, monkeypatch):
    gallery_path = save_gallery(tmp_path / "gallery.pt", trained_classes=[0, 1])
    train_set = synthetic_set([0, 1, 2, 2, 2, 3, 3], seed=5)
    run_dir = tmp_path / "run"
    term = build("bct", gallery_path, train_set=train_set, run_dir=run_dir)
    gallery = load_checkpoint(gallery_path)
    rows, row_of = term.classifier.weight, term.classifier.row_of_label
    assert term.method == "bct" and term.gallery_model_id == gallery.meta.model_id
    assert term.pseudo_classes == ["c", "d"]
    # classes the gallery was trained on: its own rows, bit for bit
    for c in (0, 1):
        assert torch.equal(rows[row_of[c]], gallery.model.classifier.weight[c].detach())
    # new classes: the gallery model's mean normalised embedding of the class's training images
    with torch.no_grad():
        emb = gallery.model(train_set.images.float() / 255)
    for c in (2, 3):
        expected = emb[train_set.labels == c].mean(0)
        torch.testing.assert_close(rows[row_of[c]], expected, rtol=1e-5, atol=1e-6)
    assert (run_dir / PSEUDO_CLASSIFIER_FILE).is_file() and (run_dir / "compat.json").is_file()

    # a second build (e.g. resuming) takes the rows from the run's cache instead of recomputing
    def fail(*args, **kwargs):
        raise AssertionError("class means recomputed despite the cache")

    monkeypatch.setattr(FrozenGallery, "class_means", fail)
    again = build("bct", gallery_path, train_set=train_set, run_dir=run_dir)
    assert torch.equal(again.classifier.weight, rows)


def test_bct_mean_takes_every_row_from_the_class_means(tmp_path):
    gallery_path = save_gallery(tmp_path / "gallery.pt", trained_classes=[0, 1, 2, 3])
    train_set = synthetic_set([0, 0, 1, 3, 3, 3], seed=7)
    term = build("bct_mean", gallery_path, train_set=train_set)
    assert term.method == "bct_mean" and term.pseudo_classes == ["a", "b", "d"]
    gallery = load_checkpoint(gallery_path)
    with torch.no_grad():
        emb = gallery.model(train_set.images.float() / 255)
    for c in (0, 1, 3):
        torch.testing.assert_close(term.classifier.weight[term.classifier.row_of_label[c]],
                                   emb[train_set.labels == c].mean(0), rtol=1e-5, atol=1e-6)


def test_bct_only_has_rows_for_the_query_training_classes(tmp_path):
    gallery_path = save_gallery(tmp_path / "gallery.pt", trained_classes=[0, 1, 2, 3])
    term = build("bct", gallery_path, train_set=synthetic_set([1, 3, 3]))
    assert term.classifier.weight.shape == (2, DIM)
    assert term.classifier.row_of_label.tolist() == [-1, 0, -1, 1]
    assert term.pseudo_classes == []


# ------------------------------------------------------------------------------ clear errors

def test_dimension_mismatch_is_an_error(tmp_path):
    gallery_path = save_gallery(tmp_path / "gallery.pt", [0, 1])
    for method in ("bct", "l2", "distill"):
        with pytest.raises(CompatibilityError, match=f"set model.embedding_dim={DIM}"):
            build(method, gallery_path, spec=tiny_model(embedding_dim=16).spec)


def test_input_size_mismatch_is_an_error(tmp_path):
    gallery_path = save_gallery(tmp_path / "gallery.pt", [0, 1])
    with pytest.raises(CompatibilityError, match="data.image_size=16"):
        build("l2", gallery_path, spec=tiny_model(image_size=32).spec)


def test_head_mismatch_is_an_error(tmp_path):
    gallery_path = save_gallery(tmp_path / "gallery.pt", [0, 1])
    with pytest.raises(CompatibilityError, match="model.head=norm_softmax model.head_scale=16 model.head_margin=0"):
        build("bct", gallery_path, spec=tiny_model(head="cosface").spec)
    with pytest.raises(CompatibilityError, match="scale 32"):
        build("bct", gallery_path, spec=tiny_model(head_scale=32.0).spec)
    # a margin spelled out equal to the head's default is the same head
    build("bct", gallery_path, spec=tiny_model(head_margin=0.0).spec)
    # L2 and distillation never use the classifier: any head will do
    build("l2", gallery_path, spec=tiny_model(head="arcface").spec)


# ------------------------------------------------------------------------------ through the trainer

def _train_query(tmp_path: Path, method: str, gallery_path: Path, splits: Splits, monkeypatch, dim: int = DIM):
    """Train a tiny query model 2 steps with the real trainer; return (result, the term it used)."""
    import hetsearch.train.loss as loss_module
    from hetsearch.train import train

    captured = {}
    real_build = loss_module.build_compat_term

    def capture(*args, **kwargs):
        captured["term"] = real_build(*args, **kwargs)
        captured["at_build"] = {k: v.detach().clone() for k, v in captured["term"].state_dict().items()}
        return captured["term"]

    monkeypatch.setattr(loss_module, "build_compat_term", capture)
    cfg = from_dict(TrainRunConfig, {
        "name": f"q_{method}", "output_dir": str(tmp_path / "runs"),
        "data": {"image_size": SIZE, "channels": 1},
        "model": {"backbone": "resnet18", "backbone_args": {"width": 4}, "embedding_dim": dim},
        "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2, "lr": 0.5, "weight_decay": 0.1,
                  "warmup_epochs": 0},
        "compat": {"method": method, "gallery_model": str(gallery_path)},
        "runtime": {"device": "cpu", "progress": False, "eval_every": 0, "seed": 0}})
    result = train(cfg, splits=splits)
    return result, captured


@pytest.mark.parametrize("method", ["bct", "bct_mean", "l2", "bct+l2"])
def test_gallery_side_stays_byte_identical_through_training(tmp_path, monkeypatch, method):
    gallery_path = save_gallery(tmp_path / "gallery.pt", trained_classes=[0, 1])
    file_hash = hashlib.sha256(gallery_path.read_bytes()).hexdigest()
    splits = synthetic_splits(train_classes=[0, 1, 2])  # class 2 is new to the gallery
    result, captured = _train_query(tmp_path, method, gallery_path, splits, monkeypatch)
    term = captured["term"]

    # nothing of the gallery side is trainable, and nothing of it changed (weights, BN statistics)
    assert not any(p.requires_grad for p in term.parameters())
    after = term.state_dict()
    assert after.keys() == captured["at_build"].keys() and after
    for name, before in captured["at_build"].items():
        assert sha(after[name]) == sha(before), name
    assert hashlib.sha256(gallery_path.read_bytes()).hexdigest() == file_hash
    if method == "bct":
        gallery = load_checkpoint(gallery_path)
        for c in (0, 1):
            row = term.classifier.weight[term.classifier.row_of_label[c]]
            assert sha(row) == sha(gallery.model.classifier.weight[c])
        assert term.pseudo_classes == ["c"]
    if method == "bct_mean":
        assert term.pseudo_classes == ["a", "b", "c"]
    if method == "bct+l2":  # each part is logged, and the total is their sum (weights 1)
        parts = result.history[-1]
        assert parts["compat_bct_loss"] > 0 and parts["compat_l2_loss"] > 0
        assert parts["compat_loss"] == pytest.approx(parts["compat_bct_loss"] + parts["compat_l2_loss"], rel=1e-5)
        summary = json.loads((result.model_path.parent / "compat.json").read_text())
        assert summary["method"] == "bct+l2" and set(summary["terms"]) == {"bct", "l2"}
        assert summary["terms"]["bct"]["pseudo_classes"] == ["c"]

    # ... while the query model did train, and records what it was trained to match
    history = result.history[-1]
    assert history["compat_loss"] > 0
    assert result.meta.compatible_with == load_checkpoint(gallery_path).meta.model_id
    assert result.meta.compatibility == method


def test_bct_through_a_gallery_that_embeds_backbone_features(tmp_path, monkeypatch):
    # the gallery embeds its pooled features (32 wide at width 4); its classifier sees their
    # projection, so the frozen classifier is projection + rows, and class means are projected
    features = 32
    gallery_path = save_gallery(tmp_path / "gallery.pt", trained_classes=[0, 1], embedding_layer="backbone",
                                embedding_dim=features, projection_dim=DIM)
    gallery = load_checkpoint(gallery_path).model.eval()
    splits = synthetic_splits(train_classes=[0, 1, 2])
    result, captured = _train_query(tmp_path, "bct", gallery_path, splits, monkeypatch, dim=features)
    term = captured["term"]
    assert term.classifier.projection is not None and term.pseudo_classes == ["c"]
    assert any(name.startswith("classifier.projection.") for name in captured["at_build"])
    for name, before in captured["at_build"].items():  # projection buffers included
        assert sha(term.state_dict()[name]) == sha(before), name
    assert result.meta.compatible_with == load_checkpoint(gallery_path).meta.model_id

    with torch.no_grad():
        # pseudo row of the new class: mean normalised *projected* gallery embedding
        train = splits.train
        projected = gallery.classifier_input(gallery(train.images.float() / 255, normalize=False))
        expected = torch.nn.functional.normalize(projected, dim=1)[train.labels == 2].mean(0)
        torch.testing.assert_close(term.classifier.weight[term.classifier.row_of_label[2]], expected,
                                   rtol=1e-5, atol=1e-6)
        # the loss is the gallery's own classifier applied to the projected query embedding
        emb, labels = torch.randn(5, features), torch.tensor([0, 1, 2, 1, 1])
        rows = torch.stack([gallery.classifier.weight[0], gallery.classifier.weight[1], expected])
        cosine = (torch.nn.functional.normalize(gallery.embedding_head(emb), dim=1)
                  @ torch.nn.functional.normalize(rows, dim=1).T)
        expected_loss = torch.nn.functional.cross_entropy(gallery.spec.head_scale * cosine, labels)
        torch.testing.assert_close(term(emb, None, labels), expected_loss, rtol=1e-5, atol=1e-6)
