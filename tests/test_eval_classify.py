"""Tests for hetsearch.eval.classification_accuracy (the query models' own-classifier diagnostic)."""

from __future__ import annotations

import pytest
import torch

from hetsearch.errors import DataError
from hetsearch.eval import classification_accuracy
from hetsearch.models import create_model


@pytest.mark.parametrize("embedding_layer", ["head", "backbone"])
def test_accuracy_matches_the_classifier_argmax(embedding_layer):
    torch.manual_seed(0)
    extra = {"embedding_dim": 32, "projection_dim": 8} if embedding_layer == "backbone" else {"embedding_dim": 8}
    model = create_model("resnet18", num_classes=3, in_chans=1, image_size=16, backbone_args={"width": 4},
                         embedding_layer=embedding_layer, **extra)
    model.train()  # must be evaluated in eval mode (BatchNorm statistics), and left in train mode
    images = torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        model.eval()
        raw = model(images.float() / 255, normalize=False)
        predicted = model.classifier(model.classifier_input(raw)).argmax(1)
        model.train()
    labels = predicted.clone()
    labels[:5] = (labels[:5] + 1) % 3  # exactly 5 of 20 wrong
    assert classification_accuracy(model, images, labels, batch_size=7) == pytest.approx(0.75)
    assert model.training


def test_bad_labels_are_a_clear_error():
    model = create_model("resnet18", num_classes=3, in_chans=1, image_size=16, backbone_args={"width": 4},
                         embedding_dim=8)
    images = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    with pytest.raises(DataError, match=r"class indices in \[0, 3\)"):
        classification_accuracy(model, images, [0, 1, 2, 3])
    with pytest.raises(DataError, match="one label per image"):
        classification_accuracy(model, images, [0, 1])
