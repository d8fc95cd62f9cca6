"""The loss module (hetsearch.train.loss): a compatibility term may own trainable parameters and
state; the trainer optimises them, checkpoints them in checkpoint_last.pt and restores them on resume.

The term below (test-only, registered for the test) has a learnable temperature (a parameter) and a
queue of past gallery embeddings (buffers), as the gallery-aware methods will. Tiny synthetic data.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hetsearch.compat import base as compat_base
from hetsearch.compat.base import CompatibilityTerm, SumOfTerms, training_state
from hetsearch.compat.gallery import FrozenGallery
from hetsearch.config import TrainRunConfig
from hetsearch.data import ImageSet, Splits
from hetsearch.errors import CheckpointError
from hetsearch.models import create_model, load_checkpoint, save_checkpoint
from hetsearch.train import CHECKPOINT_LAST, Trainer, train
from hetsearch.train.loss import ClassificationLoss, TrainingLoss
from hetsearch.utils.typed_config import from_dict

CLASSES = ["a", "b", "c"]
SIZE, DIM, QUEUE = 16, 8, 16
INITIAL_LOG_TAU = math.log(0.5)


class LearnedTemperatureTerm(CompatibilityTerm):
    """InfoNCE of φ_q(x) against φ_g(x) (in-batch and queued negatives) at a learnable temperature."""

    needs_gallery_forward = True
    frozen_submodules = ("gallery",)

    def __init__(self, gallery: FrozenGallery):
        super().__init__()
        self.method, self.gallery, self.gallery_model_id = "learned_tau", gallery, gallery.model_id
        self.summary = {"method": self.method, "gallery_model_id": gallery.model_id}
        self.log_temperature = nn.Parameter(torch.tensor(INITIAL_LOG_TAU))
        g = torch.Generator().manual_seed(0)
        self.register_buffer("queue", F.normalize(torch.randn(QUEUE, DIM, generator=g), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.int64))

    def forward(self, embeddings, images, labels):
        q = F.normalize(embeddings.float(), dim=1)
        g = F.normalize(self.gallery(images, normalize=False), dim=1)
        logits = torch.cat([q @ g.t(), q @ self.queue.t()], dim=1) / self.log_temperature.exp()
        loss = F.cross_entropy(logits, torch.arange(len(q)))
        slots = (self.pointer + torch.arange(len(g))) % QUEUE
        queue = self.queue.clone()
        queue[slots] = g
        self.queue, self.pointer = queue, (self.pointer + len(g)) % QUEUE  # new tensors: the graph keeps the old
        return loss

    @classmethod
    def build(cls, cfg, *, model_spec, classes, train_set, run_dir, device, augment):
        return cls(FrozenGallery.load(cfg.gallery_model)).to(device)


@pytest.fixture
def learned_tau():
    with compat_base.METHODS.temporary():
        compat_base.register_compat_method("learned_tau")(LearnedTemperatureTerm)
        yield


def synthetic_splits() -> Splits:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat_interleave(8)
    images = ((labels[:, None, None, None] * 60 + 20) + torch.randint(0, 40, (24, 1, SIZE, SIZE), generator=g))
    train_set = ImageSet(images=images.clamp(0, 255).to(torch.uint8), labels=labels, classes=list(CLASSES),
                         sources=[f"syn:{i}" for i in range(24)])
    return Splits(train=train_set, val=train_set.subset(slice(0, 0)), query=train_set, gallery=train_set,
                  classes=list(CLASSES), train_classes=[0, 1, 2], test_classes=[0, 1, 2], exclude_self=False,
                  protocol={"protocol": "synthetic", "train_classes": list(CLASSES)})


def tiny_gallery(path):
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, embedding_dim=DIM, in_chans=1, image_size=SIZE,
                         backbone_args={"width": 4}).eval()
    save_checkpoint(path, model, classes=CLASSES, config={})
    return path


def run_cfg(tmp_path, name: str, method: str = "learned_tau") -> TrainRunConfig:
    return from_dict(TrainRunConfig, {
        "name": name, "output_dir": str(tmp_path / "runs"), "data": {"image_size": SIZE, "channels": 1},
        "model": {"backbone": "resnet18", "backbone_args": {"width": 4}, "embedding_dim": DIM},
        "train": {"epochs": 3, "batch_size": 8, "lr": 0.1, "warmup_epochs": 0},
        "compat": {"method": method, "gallery_model": str(tmp_path / "gallery.pt")},
        "runtime": {"device": "cpu", "progress": False, "eval_every": 0, "seed": 0}})


def interrupted_after_first_epoch(cfg, splits) -> None:
    trainer = Trainer(cfg, splits=splits)
    original, calls = trainer._train_epoch, []

    def crash(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    trainer._train_epoch = crash
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def last(cfg) -> dict:
    return torch.load(cfg.run_dir / CHECKPOINT_LAST, map_location="cpu", weights_only=True)


def without_timings(history):
    return [{k: v for k, v in h.items() if k not in ("epoch_seconds", "images_per_second")} for h in history]


def test_a_term_parameter_is_optimised_and_its_state_checkpointed(tmp_path, learned_tau):
    tiny_gallery(tmp_path / "gallery.pt")
    cfg = run_cfg(tmp_path, "full")
    result = train(cfg, splits=synthetic_splits())
    state = last(cfg)
    # the term's state is in checkpoint_last, without the frozen gallery copy
    assert set(state["loss"]) == {"compat.log_temperature", "compat.queue", "compat.pointer"}
    # the optimiser trained the temperature with the model (one more parameter than the model's)
    assert state["loss"]["compat.log_temperature"].item() != pytest.approx(INITIAL_LOG_TAU, abs=1e-4)
    model_params = sum(1 for p in load_checkpoint(result.model_path).model.parameters() if p.requires_grad)
    assert sum(len(group["params"]) for group in state["optimizer"]["param_groups"]) == model_params + 1
    assert int(state["loss"]["compat.pointer"]) == (3 * 3 * 8) % QUEUE  # 3 epochs x 3 steps x batch 8
    # model.pt holds the model alone (its keys are what they were before the loss module)
    saved = torch.load(result.model_path, map_location="cpu", weights_only=True)
    assert set(saved["state_dict"]) == set(state["model"])
    assert all(h["compat_loss"] > 0 for h in result.history)


def test_term_state_survives_checkpoint_and_resume_byte_identically(tmp_path, learned_tau):
    tiny_gallery(tmp_path / "gallery.pt")
    splits = synthetic_splits()
    full = train(run_cfg(tmp_path, "full"), splits=splits)
    cfg = run_cfg(tmp_path, "resumed")
    interrupted_after_first_epoch(cfg, splits)
    assert last(cfg)["epoch"] == 0 and set(last(cfg)["loss"]) == {"compat.log_temperature", "compat.queue",
                                                                   "compat.pointer"}
    resumed = train(cfg, resume=True, splits=splits)
    a, b = last(run_cfg(tmp_path, "full")), last(cfg)
    for key in ("model", "loss"):
        assert a[key].keys() == b[key].keys() and all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert all(torch.equal(x["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
               for i, x in a["optimizer"]["state"].items())
    assert without_timings(full.history) == without_timings(resumed.history)

    # the restored state matters: resuming with the queue emptied ends elsewhere
    control = run_cfg(tmp_path, "control")
    interrupted_after_first_epoch(control, splits)
    state = last(control)
    state["loss"]["compat.queue"].zero_()
    torch.save(state, control.run_dir / CHECKPOINT_LAST)
    train(control, resume=True, splits=splits)
    assert not torch.equal(last(control)["loss"]["compat.log_temperature"], a["loss"]["compat.log_temperature"])


def test_checkpoints_from_before_the_loss_module(tmp_path, learned_tau):
    """checkpoint_last.pt files without a `loss` key resume when the loss has no state to restore,
    and are refused with one clear line when it has."""
    tiny_gallery(tmp_path / "gallery.pt")
    splits = synthetic_splits()
    for method in ("none", "learned_tau"):
        cfg = run_cfg(tmp_path, f"old_{method}", method)
        interrupted_after_first_epoch(cfg, splits)
        state = last(cfg)
        assert state["loss"] == {} if method == "none" else state["loss"]
        del state["loss"]
        torch.save(state, cfg.run_dir / CHECKPOINT_LAST)
        if method == "none":
            resumed = train(cfg, resume=True, splits=splits)
            full = train(run_cfg(tmp_path, "full_none", method), splits=splits)
            a = load_checkpoint(full.model_path).model.state_dict()
            b = load_checkpoint(resumed.model_path).model.state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:
            with pytest.raises(CheckpointError, match="written before the loss state was checkpointed"):
                train(cfg, resume=True, splits=splits)


def test_a_loss_state_that_does_not_fit_is_a_clear_error(tmp_path, learned_tau):
    tiny_gallery(tmp_path / "gallery.pt")
    splits = synthetic_splits()
    cfg = run_cfg(tmp_path, "mismatch")
    interrupted_after_first_epoch(cfg, splits)
    state = last(cfg)
    state["loss"]["compat.stranger"] = state["loss"].pop("compat.queue")
    torch.save(state, cfg.run_dir / CHECKPOINT_LAST)
    with pytest.raises(CheckpointError, match="saved loss state does not fit.*compat.stranger"):
        train(cfg, resume=True, splits=splits)


def test_frozen_gallery_copies_are_not_training_state(tmp_path):
    from hetsearch.compat import build_compat_term
    from hetsearch.config import CompatConfig

    gallery = tiny_gallery(tmp_path / "gallery.pt")
    splits = synthetic_splits()
    term = build_compat_term(CompatConfig(method="bct+l2", gallery_model=str(gallery)),
                             model_spec=load_checkpoint(gallery).model.spec, classes=CLASSES,
                             train_set=splits.train, run_dir=tmp_path / "run", device="cpu")
    assert isinstance(term, SumOfTerms) and term.state_dict()  # W_g and the gallery model are there...
    assert training_state(term) == {}                           # ...but they are not training state
    loss = TrainingLoss(ClassificationLoss(0.1), term, 0.5)
    assert loss.checkpoint_state() == {} and loss.trainable_parameters() == []
    model = create_model("resnet18", num_classes=3, embedding_dim=DIM, in_chans=1, image_size=SIZE,
                         backbone_args={"width": 4})
    x, labels = splits.train.images[:4].float() / 255, splits.train.labels[:4]
    out = loss(model, model(x, normalize=False), x, labels)
    # the composite's parts are logged, and the total is task + weight * (sum of the parts)
    assert set(out.parts) == {"bct", "l2"} and out.logits.shape == (4, 3)
    torch.testing.assert_close(out.compat, out.parts["bct"] + out.parts["l2"])
    torch.testing.assert_close(out.loss, out.task + 0.5 * out.compat)


# ------------------------------------------------------------------------------ DDP

class _CapturingTrainer(Trainer):
    def _build_loss(self, model):
        self.loss = super()._build_loss(model)
        return self.loss


def _ddp_worker(rank: int, world: int, tmp: str, port: int) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    compat_base.register_compat_method("learned_tau")(LearnedTemperatureTerm)  # a fresh interpreter: register it
    from pathlib import Path

    trainer = _CapturingTrainer(run_cfg(Path(tmp), "ddp"), splits=synthetic_splits())
    trainer.fit()
    torch.save(trainer.loss.checkpoint_state(), Path(tmp) / f"loss_rank{rank}.pt")
    dist.destroy_process_group()


def test_under_ddp_a_term_parameter_stays_the_same_on_every_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    tiny_gallery(tmp_path / "gallery.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, str(tmp_path), port), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"loss_rank{r}.pt", weights_only=True) for r in (0, 1)]
    # each process saw other images, yet the averaged gradients keep the temperature identical ...
    assert torch.equal(states[0]["compat.log_temperature"], states[1]["compat.log_temperature"])
    assert states[0]["compat.log_temperature"].item() != pytest.approx(INITIAL_LOG_TAU, abs=1e-4)
    # ... while buffers are each process's own (rank 0's are the ones checkpointed)
    assert not torch.equal(states[0]["compat.queue"], states[1]["compat.queue"])
    saved = torch.load(tmp_path / "runs" / "ddp" / CHECKPOINT_LAST, weights_only=True)
    assert torch.equal(saved["loss"]["compat.queue"], states[0]["compat.queue"])
