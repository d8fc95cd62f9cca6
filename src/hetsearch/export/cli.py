"""`hetsearch export`: the query net as ONNX or TorchScript, with contract metadata and parity check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hetsearch.utils.terminal import Console

console = Console(emoji=False, markup=False, highlight=False)


def export(query_model: Path = typer.Option(..., "--query-model", "-q", help="query model checkpoint (.pt)"),
           fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | torchscript"),
           out: Optional[Path] = typer.Option(None, "--out", "-o",
                                              help="output file (default: next to the checkpoint, "
                                                   "model.onnx / model.torchscript.pt)"),
           exporter: str = typer.Option("dynamo", help="onnx: dynamo (torch.export) | legacy (TorchScript "
                                                       "tracer); the other is tried when one fails"),
           index: Optional[Path] = typer.Option(None, "--index", help="run the parity check on this index's images "
                                                                      "and stored gallery embeddings"),
           parity_data: str = typer.Option("auto", help="auto (the model's data set, else synthetic) | synthetic"),
           queries: int = typer.Option(64, help="parity check: sample queries"),
           gallery: int = typer.Option(512, help="parity check: sample gallery size"),
           atol: float = typer.Option(1e-4, help="parity check: max abs difference of embeddings"),
           as_json: bool = typer.Option(False, "--json", help="print the export report as JSON")):
    from hetsearch.export.exporter import IndexSample, export_model

    sample = None
    if index is not None:
        from hetsearch.index.gallery import read_stored

        stored = read_stored(index)
        sample = IndexSample(stored.thumbnails, stored.vectors, str(index))
    report = export_model(query_model, fmt, out, exporter=exporter, parity_data=parity_data, index=sample,
                          n_queries=queries, n_gallery=gallery, atol=atol)
    if as_json:
        report = dict(report)
        report.pop("meta", None)
        print(json.dumps(report, indent=2))
        return
    parity = report["parity"]
    console.print(f"wrote {report['path']} ({report['format']}, {report['exporter']}) for {report['model_id']} "
                  f"(compatible_with={report['compatible_with']}) + {report['path']}.json")
    console.print(f"parity: max |diff| {parity['max_abs_diff']:.2e} <= {parity['atol']:.0e}, identical top-"
                  f"{parity['k']} for {parity['top10_identical_fraction']:.0%} of {parity['queries']} queries "
                  f"({parity['sample']})")


def register(app: typer.Typer) -> None:
    app.command("export", help="Export a query model to ONNX or TorchScript with its contract metadata; a "
                "parity check against eager PyTorch runs on every export.\n\n"
                "Example: hetsearch export --query-model runs/q/model.pt --format onnx")(export)
