"""`hetsearch grid MODEL... [data.key=value ...] [--out DIR]`: the compatibility grid from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from hetsearch.errors import ConfigError


def split_models_and_overrides(items: list[str]) -> tuple[list[Path], list[str]]:
    """Positional arguments are checkpoints, except `key=value` items that are not files."""
    models, overrides = [], []
    for item in items:
        if "=" in item and not Path(item).exists():
            overrides.append(item)
        else:
            models.append(Path(item))
    for override in overrides:
        if not override.startswith("data."):
            raise ConfigError(f"grid: override {override!r}: only data.key=value overrides apply to a grid "
                              "(e.g. data.max_test_items=2000)")
    return models, overrides


def grid(items: List[str] = typer.Argument(..., metavar="MODEL... [data.key=value ...]",
                                          help="model checkpoints (gallery model first), then data overrides"),
         out: Path = typer.Option(Path("runs/grid"), "--out", help="folder for grid.json, grid.md and grid.png"),
         queries: Path = typer.Option(None, "--queries", help="labelled query folder DIR/CLASS/IMAGE instead of "
                                      "the data protocol"),
         gallery: Path = typer.Option(None, "--gallery", help="with --queries: labelled gallery folder"),
         index: Path = typer.Option(None, "--index", help="with --queries: the images a gallery index stores"),
         device: str = typer.Option("auto", help="auto | cpu | cuda")):
    from hetsearch.utils.terminal import Console

    from hetsearch.eval.grid import run_grid
    from hetsearch.data import make_splits
    from hetsearch.eval.report import data_config_of
    from hetsearch.models import load_checkpoint

    models, overrides = split_models_and_overrides(items)
    if not models:
        raise ConfigError("grid: give at least one model checkpoint")
    # The protocol (and, for folders, the decoding) is the first model's: list the gallery model first.
    if queries is not None:
        from hetsearch.index.folders import folder_splits

        if (gallery is None) == (index is None) or overrides:
            raise ConfigError("grid --queries DIR: give exactly one of --gallery DIR or --index DIR, and no "
                              "data.key=value overrides")
        splits = folder_splits(load_checkpoint(models[0]).meta, queries, gallery=gallery, index=index)
    elif gallery is not None or index is not None:
        raise ConfigError("grid: --gallery / --index need --queries DIR")
    else:
        splits = make_splits(data_config_of(load_checkpoint(models[0]), overrides))
    result = run_grid(models, splits, out, device=device)
    console = Console()
    undeclared = [p for p in result["pairs"] if p.get("warnings")]
    if undeclared:
        console.print(f"[yellow]warning:[/yellow] {len(undeclared)} pair(s) were not trained to be compatible "
                      "(\"declared\" = no in the table); their cross-model accuracy is expected to be near chance")
    for p in result["pairs"]:
        if p.get("error"):
            console.print(f"[yellow]warning:[/yellow] {p['query']} vs {p['gallery']}: {p['error']}")
    print((out / "grid.md").read_text())
    console.print(f"wrote {out / 'grid.json'}, {out / 'grid.md'}, {out / 'grid.png'}")


def register(app: typer.Typer) -> None:
    app.command(name="grid", help="Compatibility grid: every (query model, gallery model) pair of the given "
                                  "checkpoints, with Recall@1, MAP@R, mAP, TAR@FAR=1e-3, the compatibility "
                                  "criterion M(q, g) > M(q, q), the gap to the paragon M(g, g) and the FLOPs "
                                  "ratio. The data protocol is the first model's (list the gallery model first).\n\n"
                                  "Example: hetsearch grid runs/fm/gallery/model.pt runs/fm/query_bct/model.pt "
                                  "data.max_test_items=2000 --out runs/fm/grid")(grid)
