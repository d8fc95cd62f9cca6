"""Logs a person can read when output is not a terminal (CI, `| tee`, nohup): no progress-bar
redraws (one line per epoch instead), tables and long lines not wrapped at 80 columns. Progress
bars still draw on a terminal."""

from __future__ import annotations

import io

import numpy as np
import torch
from rich.table import Table

from index_fixtures import run_cli as run  # noqa: E402  (the CLI as a user runs it; its exit status)
from hetsearch.train.progress import EpochBar
from hetsearch.utils.terminal import LOG_WIDTH, Console

TINY_MODEL = ["model.backbone=resnet18", "model.backbone_args={width: 4}", "model.embedding_dim=32"]
LONGEST_LINE = 300   # characters; a tqdm bar redrawn into a log made lines of thousands


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_training_off_a_terminal_logs_one_line_per_epoch_and_no_redraws(tiny_train_overrides, capsys):
    assert run("train", "configs/fashion_mnist/gallery.yaml", *tiny_train_overrides, *TINY_MODEL, "name=piped",
               "runtime.progress=true", "train.epochs=3") == 0
    captured = capsys.readouterr()   # pytest's capture is not a terminal, like a pipe or a file
    text = captured.out + captured.err
    assert "\r" not in text and "\x1b[" not in text, repr(text[:500])
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= LONGEST_LINE, max(lines, key=len)
    epochs = [line for line in lines if line.startswith("[piped] epoch ")]
    assert [line.split(",")[0] for line in epochs] == ["[piped] epoch 1/3", "[piped] epoch 2/3", "[piped] epoch 3/3"]
    assert all("loss " in line and "img/s" in line for line in epochs), epochs


def test_epoch_bar_draws_on_a_terminal_only(monkeypatch):
    for stream, drawn in ((FakeTerminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        bar = EpochBar("run", 0, 2, steps=4, images_per_step=8)
        for _ in range(4):
            bar.update(1, loss=0.5)
        bar.close()
        assert ("run epoch 1/2" in stream.getvalue()) is drawn, stream.getvalue()


def test_embedding_progress_is_silent_off_a_terminal(capsys):
    from hetsearch.eval import embed

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    vectors = embed(model, np.zeros((6, 1, 4, 4), dtype=np.uint8), batch_size=2, progress=True)
    assert vectors.shape == (6, 4)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def wide_table(columns: int = 12) -> Table:
    table = Table(title="M(query_model, gallery_model)")
    for i in range(columns):
        table.add_column(f"metric_{i:02d}_long_name")
    table.add_row(*[f"0.{i:04d}" for i in range(columns)])
    return table


def test_tables_and_long_lines_print_whole_off_a_terminal(capsys):
    """What the CLI commands print through their console (the pipeline's log prints the grid's
    markdown table with it): one table row is one line however wide, a long line is not wrapped."""
    from hetsearch import cli

    row = "| " + " | ".join(f"query_model_{i}" for i in range(20)) + " |"
    assert len(row) > 300
    cli.console.print(row, markup=False)
    cli.console.print(wide_table())
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == row
    table_lines = lines[1:]
    assert len(table_lines) == 6, out   # title, top border, header, separator, the row, bottom border
    assert len({len(line.rstrip()) for line in table_lines[1:]}) == 1 and len(table_lines[1]) > 200, out


def test_console_width_follows_the_terminal_and_an_explicit_width():
    piped = Console(file=io.StringIO())
    assert piped.width == LOG_WIDTH
    fixed = Console(file=io.StringIO(), width=60)
    fixed.print(wide_table())
    assert max(len(line) for line in fixed.file.getvalue().splitlines()) <= 60
    terminal = Console(file=FakeTerminal(), force_terminal=True)
    assert terminal.width < LOG_WIDTH   # the terminal's own width (80 when it cannot be measured)
