"""Gallery-aware compatibility terms (contrastive, relational, context, bank_l2) and label-free training.

Losses on hand-built banks; training through the CLI and the Trainer on tiny synthetic data.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hetsearch.compat.bank import GalleryBank
from hetsearch.compat.bank_terms import BankL2Term
from hetsearch.compat.base import BatchRefs, SumOfTerms, apply_term
from hetsearch.compat.context import ContextTerm
from hetsearch.compat.contrastive import ContrastiveTerm
from hetsearch.compat.relational import RelationalTerm
from hetsearch.compat.views import ItemViews
from hetsearch.errors import ConfigError
from hetsearch.models import create_model, load_checkpoint, save_checkpoint

N, K, D = 64, 2, 16


def hand_bank(seed: int = 0) -> GalleryBank:
    g = torch.Generator().manual_seed(seed)
    rows = F.normalize(torch.randn(N, K, D, generator=g), dim=2)
    return GalleryBank(rows.numpy().astype(np.float16), ItemViews(), "gallery-x")


def refs_for(batch: int = 8, seed: int = 1) -> BatchRefs:
    g = torch.Generator().manual_seed(seed)
    return BatchRefs(indices=torch.randperm(N, generator=g)[:batch], views=torch.randint(0, K, (batch,), generator=g),
                     seed=seed)


def positives(bank: GalleryBank, refs: BatchRefs) -> torch.Tensor:
    return bank.tensor("cpu")[refs.indices, refs.views].float()


@pytest.mark.parametrize("negatives", [0, 16, -1])
def test_contrastive_loss_is_low_when_the_query_is_its_positive(negatives):
    bank, refs = hand_bank(), refs_for()
    term = ContrastiveTerm(bank, True, temperature=0.05, negatives=negatives)
    pos = positives(bank, refs)
    matched = term(pos * 3.0, None, None, refs=refs)  # scale does not matter: queries are normalised
    other = term(positives(bank, BatchRefs(refs.indices.flip(0), refs.views.flip(0), refs.seed)), None, None, refs=refs)
    random = term(torch.randn(8, D), None, None, refs=refs)
    assert matched.item() < 0.05 < random.item() and matched.item() < other.item()


def test_contrastive_never_counts_the_querys_own_image_as_a_negative():
    bank, refs = hand_bank(), refs_for()
    full = ContrastiveTerm(bank, True, temperature=0.05, negatives=-1)
    # view 0 and view 1 of an image are different vectors; the own image's view-0 row is masked
    q = positives(bank, refs)
    logits_loss = full(q, None, None, refs=refs)
    assert torch.isfinite(logits_loss) and logits_loss.item() < 0.05


def test_relational_loss_is_zero_when_the_query_ranks_anchors_as_the_gallery_does():
    bank, refs = hand_bank(), refs_for()
    term = RelationalTerm(bank, True, anchors=N * 4, temperature=0.1)  # many draws: own rows surely sampled
    pos = positives(bank, refs)
    assert term(pos, None, None, refs=refs).item() == pytest.approx(0.0, abs=1e-5)
    assert term(torch.randn(8, D), None, None, refs=refs).item() > 0.1
    # a draw is a function of the step seed: the same refs give the same loss
    q = torch.randn(8, D)
    assert term(q, None, None, refs=refs).item() == term(q, None, None, refs=refs).item()


def test_bank_l2_is_the_squared_distance_of_unit_vectors():
    bank, refs = hand_bank(), refs_for()
    term = BankL2Term("bank_l2", bank)
    pos = positives(bank, refs)
    assert term(pos * 2, None, None, refs=refs).item() == pytest.approx(0.0, abs=1e-6)
    q = torch.randn(8, D)
    expected = (2 - 2 * F.cosine_similarity(q, pos, dim=1)).mean()
    assert term(q, None, None, refs=refs).item() == pytest.approx(expected.item(), rel=1e-4)


def test_composites_pass_refs_to_the_bank_parts_and_share_the_bank():
    bank, refs = hand_bank(), refs_for()
    parts = {"contrastive": ContrastiveTerm(bank, True, 0.05, 16), "relational": RelationalTerm(bank, True, 32, 0.1)}
    total = SumOfTerms(parts, {"relational": 0.5})
    assert total.view_source is bank and total.needs_bank
    q = torch.randn(8, D)
    value = apply_term(total, q, None, None, refs)
    expected = parts["contrastive"](q, None, None, refs=refs) + 0.5 * parts["relational"](q, None, None, refs=refs)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_options_are_config_errors():
    bank = hand_bank()
    with pytest.raises(ConfigError, match="temperature"):
        ContrastiveTerm(bank, True, temperature=0.0, negatives=8)
    with pytest.raises(ConfigError, match="negatives"):
        ContrastiveTerm(bank, True, temperature=0.1, negatives=-2)
    with pytest.raises(ConfigError, match="anchors"):
        RelationalTerm(bank, True, anchors=0, temperature=0.1)
    with pytest.raises(ConfigError, match="context"):
        ContextTerm(bank, True, neighbours=0, temperature=0.1)


# ----------------------------------------------------------------------------- training

def tiny_gallery(path, size: int, dim: int, in_chans: int = 1):
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, embedding_dim=dim, in_chans=in_chans, image_size=size,
                         backbone_args={"width": 4}).eval()
    save_checkpoint(path, model, classes=["a", "b", "c"], config={})
    return load_checkpoint(path).meta.model_id


def write_unlabelled_folder(root, n: int = 50, size: int = 16):
    from PIL import Image

    folder = root / "unlabelled"  # one sub-folder: a single "class", i.e. no labels
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    for i in range(n):
        base = (i % 5) * 40 + 20
        pixels = np.clip(base + g.integers(0, 40, (size, size)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"img_{i:03d}.png")


def test_label_free_training_through_the_cli_logs_m_qg_every_epoch(tmp_path):
    from typer.testing import CliRunner

    from hetsearch.cli import app

    write_unlabelled_folder(tmp_path / "images")
    gallery_id = tiny_gallery(tmp_path / "gallery.pt", size=16, dim=16)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "train", "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml", f"output_dir={runs}", "name=q",
        "data.source=image_folder", f"data.root={tmp_path / 'images'}", "data.image_size=16",
        "model.backbone=resnet18", "model.backbone_args={width: 4}", "model.embedding_dim=16",
        "train.task_loss=none", "train.epochs=2", "train.batch_size=8",
        "compat.method=contrastive+relational", f"compat.gallery_model={tmp_path / 'gallery.pt'}",
        "compat.bank.views=2", "compat.gallery_aware.negatives=16", "compat.gallery_aware.anchors=16",
        "runtime.device=cpu", "runtime.progress=false"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (runs / "q" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    for line in lines:
        assert line["cls_loss"] == 0.0 and line["train_accuracy"] is None
        assert line["compat_contrastive_loss"] > 0 and line["compat_relational_loss"] >= 0
        assert 0.0 <= line["val_instance_recall_at_1"] <= 1.0 and "val_hetero_recall_at_1" in line
    q = load_checkpoint(runs / "q" / "model.pt")
    assert q.meta.compatible_with == gallery_id and q.meta.compatibility == "contrastive+relational"
    bank_meta = json.loads(next((runs / "banks").glob("*/bank.json")).read_text())
    assert bank_meta["complete"] and bank_meta["key"]["views"] == 2


def test_label_free_without_a_compat_method_is_a_config_error(tmp_path, tiny_train_overrides):
    from hetsearch.config import TrainRunConfig
    from hetsearch.train import train
    from hetsearch.utils.typed_config import load_config

    cfg = load_config(TrainRunConfig, "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml",
                      [*tiny_train_overrides, "train.task_loss=none", "compat.method=none"])
    with pytest.raises(ConfigError, match="label-free"):
        train(cfg)


def test_matched_views_resume_like_an_uninterrupted_run(tmp_path, tiny_train_overrides):
    from hetsearch.config import TrainRunConfig
    from hetsearch.train import train
    from hetsearch.train.trainer import Trainer
    from hetsearch.utils.typed_config import load_config

    tiny_gallery(tmp_path / "gallery.pt", size=28, dim=16)
    base = [*tiny_train_overrides, "model.embedding_dim=16", "compat.method=contrastive",
            f"compat.gallery_model={tmp_path / 'gallery.pt'}", "compat.bank.views=3",
            "compat.gallery_aware.negatives=32"]
    cfg = lambda name: load_config(TrainRunConfig, "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml",  # noqa: E731
                                   [*base, f"name={name}"])
    full = train(cfg("full"))
    assert all("val_hetero_recall_at_1" in h for h in full.history)
    trainer = Trainer(cfg("resumed"))
    original, calls = trainer._train_epoch, []

    def crash_after_first_epoch(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    trainer._train_epoch = crash_after_first_epoch
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    resumed = train(cfg("resumed"), resume=True)
    a = load_checkpoint(full.model_path).model.state_dict()
    b = load_checkpoint(resumed.model_path).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_supernet_trains_with_a_non_bct_method(tmp_path, tiny_train_overrides):
    import hetsearch.nas  # noqa: F401  (registers the cmpnas_supernet backbone)
    from hetsearch.config import TrainRunConfig
    from hetsearch.train import train
    from hetsearch.utils.typed_config import load_config

    gallery_id = tiny_gallery(tmp_path / "gallery.pt", size=28, dim=16)
    cfg = load_config(TrainRunConfig, "configs/fashion_mnist/supernet.yaml", [
        *tiny_train_overrides, "model.embedding_dim=16",
        "model.backbone_args={stage_layers: [1, 1, 1, 1], widths: [0.5, 1.0]}",
        "compat.method=relational+contrastive", f"compat.gallery_model={tmp_path / 'gallery.pt'}",
        "compat.bank.views=2", "compat.gallery_aware.negatives=32", "compat.gallery_aware.anchors=32"])
    result = train(cfg)
    supernet = load_checkpoint(result.model_path)
    assert supernet.meta.compatible_with == gallery_id
    assert all(h["compat_relational_loss"] >= 0 and h["compat_contrastive_loss"] > 0 for h in result.history)


def test_bn_recalibration_replaces_lagging_running_statistics():
    from hetsearch.train.bn_recalibration import recalibrate_batchnorm

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, embedding_dim=8, in_chans=1, image_size=16,
                         backbone_args={"width": 4})
    images = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8)
    head_bn = model.embedding_head.norm
    head_bn.running_mean.fill_(5.0)  # stale statistics, as after a large weight update
    model.eval()
    recalibrate_batchnorm(model, images, batches=4, batch_size=64, seed=0)
    assert not model.training and head_bn.momentum == 0.1
    assert head_bn.running_mean.abs().max() < 5.0
    # with one batch, the running mean is that batch's mean of the head's input (train-mode forward)
    recalibrate_batchnorm(model, images, batches=1, batch_size=64, seed=0)
    import copy

    probe = copy.deepcopy(model).train()
    seen = []
    probe.embedding_head.norm.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0]))
    idx = torch.randint(0, 64, (64,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probe(images[idx].float() / 255, normalize=False)
    assert torch.allclose(head_bn.running_mean, seen[0].mean(0), atol=1e-5)


def test_hard_negatives_are_the_gallerys_nearest_other_images():
    bank, refs = hand_bank(), refs_for()
    near = bank.neighbors(3, "cpu")
    rows = bank.tensor("cpu")[:, 0].float()
    sims = rows @ rows.t()
    sims.fill_diagonal_(float("-inf"))
    assert torch.equal(near, sims.topk(3, dim=1).indices)
    term = ContrastiveTerm(bank, True, temperature=0.05, negatives=8, hard_negatives=3)
    plain = ContrastiveTerm(bank, True, temperature=0.05, negatives=8)
    q = torch.randn(8, D)
    assert term(q, None, None, refs=refs).item() > plain(q, None, None, refs=refs).item()  # more negatives
    assert term(positives(bank, refs), None, None, refs=refs).item() < 0.05


def test_context_matches_the_gallerys_similarities_to_each_images_neighbours():
    bank, refs = hand_bank(), refs_for()
    term = ContextTerm(bank, True, neighbours=4, temperature=0.1)
    pos = positives(bank, refs)
    assert term(pos, None, None, refs=refs).item() == pytest.approx(0.0, abs=1e-5)
    # a query that lands on its image's nearest look-alike instead of on its own gallery embedding
    near = bank.neighbors(4, "cpu")[refs.indices, 0]
    look_alike = bank.tensor("cpu")[near, 0].float()
    assert term(look_alike, None, None, refs=refs).item() > 0.1
    assert term(torch.randn(8, D), None, None, refs=refs).item() > 0.1


def test_context_trains_a_query_model(tmp_path, tiny_train_overrides):
    from hetsearch.config import TrainRunConfig
    from hetsearch.train import train
    from hetsearch.utils.typed_config import load_config

    gallery_id = tiny_gallery(tmp_path / "gallery.pt", size=28, dim=16)
    cfg = load_config(TrainRunConfig, "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml", [
        *tiny_train_overrides, "model.embedding_dim=16", "compat.method=contrastive+context",
        f"compat.gallery_model={tmp_path / 'gallery.pt'}", "compat.bank.views=2",
        "compat.gallery_aware.negatives=32", "compat.gallery_aware.context=3"])
    result = train(cfg)
    assert all(h["compat_context_loss"] >= 0 and h["compat_contrastive_loss"] > 0 for h in result.history)
    assert load_checkpoint(result.model_path).meta.compatible_with == gallery_id
