"""Training learns, and compatibility training makes a query model searchable against a gallery
model that independent training does not: on a tiny synthetic problem, with the real trainer.

The problem: 4 classes of 1x16x16 images, each class a different binary texture (horizontal,
vertical, diagonal stripes, checkerboard) at a random shift, with noise; 32 training and 16 query
images per class. Width-4 ResNet-18s, 8-d embeddings, CPU, one thread: about ten seconds in all.
Seeds are fixed; the margins asserted are wide (see each test) so that kernel-level float
differences between machines cannot flip them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hetsearch.config import TrainRunConfig
from hetsearch.data import ImageSet, Splits
from hetsearch.eval import evaluate_pair
from hetsearch.models import create_model, load_checkpoint
from hetsearch.train import train
from hetsearch.utils.typed_config import from_dict

CLASSES = ["horizontal", "vertical", "diagonal", "checker"]
SIZE = 16
CHANCE = 1 / len(CLASSES)   # Recall@1 of a random ranking (balanced classes)
GALLERY_SEED, QUERY_SEED = 7, 0   # different seeds: the query model must not start from the gallery's weights


def texture_set(per_class: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    textures = torch.stack([(yy // 4) % 2, (xx // 4) % 2, ((yy + xx) // 4) % 2, (yy // 4 + xx // 4) % 2]).float()
    labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    images = []
    for c in labels.tolist():
        dy, dx = torch.randint(0, 8, (2,), generator=g).tolist()
        pattern = torch.roll(textures[c], (dy, dx), (0, 1))
        images.append(pattern * 150 + 40 + torch.randint(0, 60, (SIZE, SIZE), generator=g).float())
    images = torch.stack(images)[:, None].clamp(0, 255).to(torch.uint8)
    return ImageSet(images=images, labels=labels, classes=list(CLASSES), sources=[f"syn:{i}" for i in range(len(labels))])


def texture_splits() -> Splits:
    train_set, query = texture_set(32, seed=1), texture_set(16, seed=2)
    return Splits(train=train_set, val=train_set.subset(slice(0, 0)), query=query, gallery=train_set,
                  classes=list(CLASSES), train_classes=[0, 1, 2, 3], test_classes=[0, 1, 2, 3], exclude_self=False,
                  protocol={"protocol": "synthetic textures"})


def run_config(out: Path, name: str, *, seed: int, epochs: int, method: str = "none",
               gallery: Path | None = None) -> TrainRunConfig:
    return from_dict(TrainRunConfig, {
        "name": name, "output_dir": str(out),
        "data": {"image_size": SIZE, "channels": 1},
        "model": {"backbone": "resnet18", "backbone_args": {"width": 4}, "embedding_dim": 8},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 0.1, "warmup_epochs": 0},
        "compat": {"method": method, "gallery_model": str(gallery) if gallery else None},
        "runtime": {"device": "cpu", "progress": False, "eval_every": 0, "seed": seed}})


def recall_at_1(query_model, gallery_model, splits: Splits) -> float:
    return evaluate_pair(query_model, gallery_model, splits.query.images, splits.query.labels,
                         splits.gallery.images, splits.gallery.labels)["recall_at_1"]


@pytest.fixture(scope="module")
def trained_gallery(tmp_path_factory):
    splits = texture_splits()
    result = train(run_config(tmp_path_factory.mktemp("learning"), "gallery", seed=GALLERY_SEED, epochs=8),
                   splits=splits)
    return splits, result


def test_training_learns(trained_gallery):
    splits, result = trained_gallery
    losses = [epoch["loss"] for epoch in result.history]
    assert len(losses) == 8
    assert losses[-1] < 0.5 * losses[0], losses   # measured here: 5.1 -> 0.79
    trained = load_checkpoint(result.model_path).model
    torch.manual_seed(GALLERY_SEED)
    untrained = create_model("resnet18", num_classes=len(CLASSES), embedding_dim=8, in_chans=1, image_size=SIZE,
                             backbone_args={"width": 4}).eval()
    before, after = recall_at_1(untrained, untrained, splits), recall_at_1(trained, trained, splits)
    # measured here: 0.47 untrained (random conv features already see some texture), 0.97 trained
    assert after >= 0.85 and after >= before + 0.2, (before, after)


def test_compatibility_training_beats_independent_training_on_m_q_g(trained_gallery, tmp_path):
    splits, gallery_result = trained_gallery
    gallery = load_checkpoint(gallery_result.model_path).model
    hetero = {}
    for method in ("none", "l2"):
        result = train(run_config(tmp_path, f"query_{method}", seed=QUERY_SEED, epochs=10, method=method,
                                  gallery=gallery_result.model_path if method != "none" else None), splits=splits)
        query = load_checkpoint(result.model_path).model
        hetero[method] = recall_at_1(query, gallery, splits)
        assert recall_at_1(query, query, splits) >= 0.85   # both query models are good by themselves
    # measured here: M(q, g) 0.17 independent (chance: 0.25), 0.64 with L2 regression to the gallery.
    # BCT is not asserted: on this problem its M(q, g) was 0.38, 0.25 and 0.00 for query seeds 0, 2,
    # 3. Its loss works (seed 3: the gallery's classifier labels 84% of the query embeddings
    # correctly) but 4 classifier rows constrain little of the embedding: the gallery's own class
    # means lie at cosine ~0.15 from their rows, so query and gallery embeddings of a class can be
    # correctly classified and still far apart (docs/compat.md discusses the same with 10 classes).
    assert hetero["none"] <= CHANCE + 0.15, hetero
    assert hetero["l2"] >= 0.5 and hetero["l2"] >= hetero["none"] + 0.3, hetero
