"""docs/architecture.md, "How to add a backbone / data set / compatibility method": the three
examples there, registered here as toy members and run through the command line (`hetsearch
train` of a gallery model on the toy data set, then of a query model made compatible with it by
the toy method; tiny runs, seconds each) and listed by `hetsearch list`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from index_fixtures import run_cli as run  # noqa: E402  (the CLI as a user runs it; its exit status)
from hetsearch.compat import METHODS, CompatibilityTerm, register_compat_method
from hetsearch.compat.gallery import FrozenGallery, check_same_embedding_space
from hetsearch.data import DATASETS, DatasetSource, ImageSet, RawData, register_dataset
from hetsearch.models import BACKBONES, load_checkpoint, register_backbone


# ------------------------------------------------------------------ a backbone (models/registry.py)

def tiny_convnet(*, in_chans: int, image_size: int, width: int = 8) -> tuple[nn.Module, int]:
    """Two 3x3 convolutions and global average pooling (a how-to example)."""
    net = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return net, width  # (module mapping N x C x H x W floats to N x feature_dim, feature_dim)


# ------------------------------------------------------------------ a data set (data/registry.py)

@dataclass
class StripesOptions:
    """``data.options`` of ``data.source: stripes``."""

    per_class: int = 24


class StripesDataset(DatasetSource):
    name = "stripes"
    help = "synthetic stripes, one stripe period per class (a how-to example)"
    Options = StripesOptions

    def load(self, cfg, options: StripesOptions) -> RawData:
        classes = ["period2", "period3", "period4", "period5"]
        labels = torch.arange(len(classes)).repeat_interleave(options.per_class)
        g = torch.Generator().manual_seed(cfg.seed)
        x = torch.arange(cfg.image_size)
        stripes = torch.stack([(x % (c + 2) == 0).float() for c in range(len(classes))])  # (classes, W)
        images = stripes[labels][:, None, None, :].expand(-1, cfg.channels, cfg.image_size, -1) * 200
        images = (images + torch.randint(0, 50, images.shape, generator=g)).to(torch.uint8)
        items = ImageSet(images=images, labels=labels, classes=classes,
                         sources=[f"stripes:{i}" for i in range(len(labels))])
        return RawData(splits={"all": items}, classes=classes, layout="synthetic stripes")


# ------------------------------------------------------------------ a compatibility method (compat/base.py)

class CosineToGalleryTerm(CompatibilityTerm):
    """1 - cos(query embedding, the gallery model's embedding of the same image) (a how-to example)."""

    needs_gallery_forward = True      # what it needs: read by the trainer and the config check
    frozen_submodules = ("gallery",)  # rebuilt from the gallery checkpoint, not training state

    def __init__(self, gallery: FrozenGallery):
        super().__init__()
        self.method, self.gallery, self.gallery_model_id = "cosine_to_gallery", gallery, gallery.model_id
        self.summary = {"method": self.method, "gallery_model_id": gallery.model_id}

    def forward(self, embeddings, images, labels):
        return (1 - F.cosine_similarity(embeddings.float(), self.gallery(images), dim=1)).mean()

    @classmethod
    def build(cls, cfg, *, model_spec, classes, train_set, run_dir, device, augment):
        gallery = FrozenGallery.load(cfg.gallery_model)
        check_same_embedding_space(model_spec, gallery.meta, "cosine_to_gallery")
        return cls(gallery).to(device)


@pytest.fixture
def toy_members():
    """The three registrations the docs write as decorators, undone after the test."""
    with BACKBONES.temporary(), DATASETS.temporary(), METHODS.temporary():
        register_backbone("tiny_convnet")(tiny_convnet)
        register_dataset(StripesDataset)
        register_compat_method("cosine_to_gallery")(CosineToGalleryTerm)
        yield


def train(tmp_path: Path, name: str, *overrides: str) -> int:
    config = tmp_path / "toy.yaml"
    config.write_text("# every setting is an override below\n")
    return run("train", config, f"name={name}", f"output_dir={tmp_path}", "data.source=stripes",
               "data.image_size=16", "data.protocol=closed_set", "model.backbone=tiny_convnet",
               "model.embedding_dim=8", "train.epochs=1", "train.batch_size=16", "train.max_steps_per_epoch=2",
               "train.warmup_epochs=0", "runtime.device=cpu", "runtime.progress=false", "runtime.eval_every=0",
               *overrides)


def test_a_toy_backbone_data_set_and_compatibility_method_train_through_the_cli(tmp_path, toy_members, capsys):
    assert train(tmp_path, "gallery", "compat.method=none", "model.backbone_args={width: 16}") == 0
    gallery = tmp_path / "gallery" / "model.pt"
    assert train(tmp_path, "query", "compat.method=cosine_to_gallery", f"compat.gallery_model={gallery}") == 0
    query = load_checkpoint(tmp_path / "query" / "model.pt").meta
    assert query.spec.backbone == "tiny_convnet" and query.compatibility == "cosine_to_gallery"
    assert query.compatible_with == load_checkpoint(gallery).meta.model_id
    assert json.loads((tmp_path / "query" / "compat.json").read_text())["method"] == "cosine_to_gallery"
    capsys.readouterr()
    assert run("list") == 0
    listed = capsys.readouterr().out
    assert "tiny_convnet" in listed and "Two 3x3 convolutions" in listed
    assert "stripes" in listed and "cosine_to_gallery" in listed and "[needs: gallery forward]" in listed


def test_the_toy_members_are_gone_after_the_test():
    assert "tiny_convnet" not in BACKBONES and "stripes" not in DATASETS and "cosine_to_gallery" not in METHODS
