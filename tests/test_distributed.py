"""DDP under torchrun: the same trainer as one process, two CPU processes (gloo), rank 0 writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from hetsearch.models import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/fashion_mnist/query_mobilenetv3_small.yaml"


def _torchrun_train(overrides: list[str], *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "hetsearch.cli", "train", CONFIG, *overrides, *flags]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_ddp_training_under_torchrun_shards_data_and_resumes(tiny_train_overrides, tmp_path):
    overrides = [*tiny_train_overrides, "name=ddp", "compat.method=none", "compat.gallery_model=null",
                 "runtime.num_threads=1"]
    result = _torchrun_train(overrides)
    assert result.returncode == 0, result.stderr[-4000:]

    run = tmp_path / "runs" / "ddp"
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]          # rank 0 alone writes: one record per epoch
    assert history[-1]["images"] == 3 * 64 * 2              # 3 steps x batch 64 on each of the 2 processes
    loaded = load_checkpoint(run / "model.pt")
    emb = loaded.model.eval()(torch.rand(4, 1, 28, 28))
    assert torch.isfinite(emb).all() and emb.shape == (4, 128)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model_id"] == loaded.meta.model_id

    # a finished run resumes to "done" under torchrun too, without training again or rewriting it
    model_bytes = (run / "model.pt").read_bytes()
    again = _torchrun_train(overrides, "--resume")
    assert again.returncode == 0, again.stderr[-4000:]
    assert (run / "model.pt").read_bytes() == model_bytes
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
