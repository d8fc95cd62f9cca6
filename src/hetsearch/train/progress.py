"""What a training run shows while it runs (rank 0, `runtime.progress`): a per-epoch progress bar
with the running loss and images per second (only on a terminal: hetsearch.utils.terminal), and
one line per finished epoch (always: what a log of a piped or redirected run holds)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

from hetsearch.utils.terminal import is_terminal


class EpochBar:
    """A tqdm bar over one epoch's steps; `update` shows the running mean loss and img/s. Drawn only
    when stderr (where it draws) is a terminal: elsewhere its redraws would become one endless line."""

    def __init__(self, run_name: str, epoch: int, epochs: int, steps: int, images_per_step: int):
        self._bar = tqdm(total=steps, desc=f"{run_name} epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                         dynamic_ncols=True, file=sys.stderr, disable=not is_terminal(sys.stderr))
        self._images_per_step = images_per_step

    def update(self, n: int, loss: float) -> None:
        if self._bar.disable:
            return
        self._bar.update(n)
        rate = self._bar.format_dict.get("rate") or 0.0
        self._bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate * self._images_per_step:.0f}", refresh=False)

    def close(self) -> None:
        self._bar.close()


def epoch_line(run_name: str, epochs: int, record: dict) -> str:
    """`[name] epoch 2/10, loss 0.8123, train acc 0.7012, 930 img/s, val R@1 0.8112, ...`"""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}",
             f"{record['images_per_second']:.0f} img/s"]
    if record.get("train_accuracy") is not None:
        parts.insert(2, f"train acc {record['train_accuracy']:.4f}")
    if "val_recall_at_1" in record:
        parts.append(f"val R@1 {record['val_recall_at_1']:.4f}")
    if "val_hetero_recall_at_1" in record:
        parts.append(f"val M(q,g) R@1 {record['val_hetero_recall_at_1']:.4f}")
    return f"[{run_name}] " + ", ".join(parts)
