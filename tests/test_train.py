import json

import pytest
import torch

from hetsearch.config import TrainRunConfig
from hetsearch.errors import ConfigError
from hetsearch.models import load_checkpoint
from hetsearch.train import CHECKPOINT_LAST, train
from hetsearch.train.schedule import warmup_cosine
from hetsearch.utils.typed_config import load_config

# gallery.yaml embeds the pooled backbone features: 32 wide for a width-4 ResNet-18
TINY_MODEL = ["model.backbone=resnet18", "model.backbone_args={width: 4}", "model.embedding_dim=32"]


def _cfg(overrides, *extra):
    return load_config(TrainRunConfig, "configs/fashion_mnist/gallery.yaml", [*overrides, *TINY_MODEL, *extra])


def test_train_writes_run_folder_and_checkpoint(tiny_train_overrides):
    cfg = _cfg(tiny_train_overrides, "name=a")
    result = train(cfg)
    run = cfg.run_dir
    assert (run / "model.pt").exists() and (run / CHECKPOINT_LAST).exists()
    assert load_config(TrainRunConfig, run / "config.yaml") == cfg
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert {"loss", "train_accuracy", "images_per_second", "val_recall_at_1"} <= set(lines[-1])
    loaded = load_checkpoint(result.model_path)
    assert loaded.meta.model_id == result.meta.model_id
    assert loaded.meta.spec.embedding_dim == 32 and len(loaded.meta.classes) == 10


def test_training_is_deterministic_and_resume_matches_uninterrupted(tiny_train_overrides):
    full = train(_cfg(tiny_train_overrides, "name=full"))
    # an interrupted run: stop after epoch 1, then resume the same config for the rest
    first = _cfg(tiny_train_overrides, "name=resumed", "train.epochs=2")
    from hetsearch.train.trainer import Trainer

    trainer = Trainer(first)
    original = trainer._train_epoch
    calls = []

    def crash_after_first_epoch(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    trainer._train_epoch = crash_after_first_epoch
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not (first.run_dir / "model.pt").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train(first)
    resumed = train(first, resume=True)
    a = load_checkpoint(full.model_path).model.state_dict()
    b = load_checkpoint(resumed.model_path).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resuming a finished run returns it without training again
    assert train(first, resume=True).meta.model_id == resumed.meta.model_id


def test_resume_reuses_a_finished_model_kept_without_its_checkpoint(tiny_train_overrides):
    """A finished run folder without checkpoint_last.pt (bench/state.py keeps only model.pt) is reused:
    retraining over it would replace the model that its results were computed with."""
    cfg = _cfg(tiny_train_overrides, "name=kept")
    first = train(cfg)
    (cfg.run_dir / CHECKPOINT_LAST).unlink()
    before = (cfg.run_dir / "model.pt").read_bytes()
    again = train(cfg, resume=True)
    assert (cfg.run_dir / "model.pt").read_bytes() == before and not (cfg.run_dir / CHECKPOINT_LAST).exists()
    assert again.meta.model_id == first.meta.model_id and [h["epoch"] for h in again.history] == [1, 2]
    with pytest.raises(ConfigError, match="trained for 2 epochs"):
        train(_cfg(tiny_train_overrides, "name=kept", "train.epochs=3"), resume=True)


def test_resume_refuses_a_changed_config(tiny_train_overrides):
    cfg = _cfg(tiny_train_overrides, "name=c")
    train(cfg)
    (cfg.run_dir / "model.pt").unlink()
    changed = _cfg(tiny_train_overrides, "name=c", "train.lr=0.01")
    with pytest.raises(ConfigError, match="config differs in section\\(s\\) train"):
        train(changed, resume=True)


def _edit_saved_config(path, edit):
    state = torch.load(path, map_location="cpu", weights_only=True)
    edit(state["config"])
    torch.save(state, path)


def test_resume_accepts_a_run_saved_before_a_field_existed(tiny_train_overrides):
    cfg = _cfg(tiny_train_overrides, "name=older", "train.epochs=2", "train.augment.erase_prob=0.0")
    train(cfg)
    (cfg.run_dir / "model.pt").unlink()
    last = cfg.run_dir / CHECKPOINT_LAST
    # a run started by a version without random erasing: its saved config lacks the fields,
    # whose defaults (erasing off) reproduce that version's behaviour
    _edit_saved_config(last, lambda c: [c["train"]["augment"].pop(k) for k in ("erase_prob", "erase_area")])
    assert train(cfg, resume=True).model_path.exists()
    # a saved config with a key this version does not know is refused, naming the key
    (cfg.run_dir / "model.pt").unlink()
    _edit_saved_config(last, lambda c: c["train"].update(mystery=1))
    with pytest.raises(ConfigError, match="mystery"):
        train(cfg, resume=True)


def test_warmup_then_cosine_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.05


def test_independent_model_with_a_missing_gallery_trains_without_m_q_g(tiny_train_overrides, tmp_path, capsys):
    """compat.gallery_model only monitors an independent model: a missing file is a warning, not a
    crash after the first epoch (the quick pipeline once died there)."""
    missing = tmp_path / "no" / "model.pt"
    cfg = _cfg(tiny_train_overrides, "name=independent", "compat.method=none", f"compat.gallery_model={missing}",
               "runtime.eval_every=1")
    train(cfg)
    lines = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "val_recall_at_1" in lines[-1] and "val_hetero_recall_at_1" not in lines[-1]
    assert capsys.readouterr().out.count(f"compat.gallery_model={missing} does not exist") == 1
