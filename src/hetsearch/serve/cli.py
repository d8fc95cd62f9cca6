"""`hetsearch serve`: HTTP API + web page over an index and a query model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

console = Console(emoji=False)


def serve(index: Path = typer.Option(..., "--index", "-i", help="index folder (hetsearch index build)"),
          query_model: Path = typer.Option(..., "--query-model", "-q",
                                           help="query model: checkpoint (.pt) or an exported .onnx / TorchScript file"),
          host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 for every interface)"),
          port: int = typer.Option(8000, min=1, max=65535, help="TCP port"),
          runtime: str = typer.Option("auto", help="auto (by file type) | torch | onnx (ONNX Runtime; a .pt is "
                                                   "exported at start, with the parity check) | torchscript"),
          threads: int = typer.Option(1, min=1, help="intra-op threads of the query net and FAISS per request"),
          allow_incompatible: bool = typer.Option(False, "--allow-incompatible",
                                                  help="serve a query model not trained for this index's gallery "
                                                       "model (experiments only; prints a warning)"),
          nprobe: Optional[int] = typer.Option(None, help="ivf index: lists visited per query"),
          ef_search: Optional[int] = typer.Option(None, help="hnsw index: efSearch"),
          max_upload_mb: float = typer.Option(10.0, min=0.001, max=1024, help="largest accepted upload in MiB"),
          max_k: int = typer.Option(100, min=1, help="largest k a client may ask for"),
          access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="log every request"),
          log_level: str = typer.Option("info", help="uvicorn log level"),
          verify: str = typer.Option("off", "--verify", help="measure the query model on a stored sample of the "
                                     "gallery at start: off | warn | refuse (see `hetsearch verify`)"),
          reload_interval: float = typer.Option(1.0, min=0, help="seconds between checks for a new index version "
                                                "(after index add/remove/rebuild; 0: never reload)")):
    from hetsearch.index.cli import check_verify_option
    from hetsearch.serve.server import run_server

    check_verify_option(verify)

    run_server(index, query_model, host=host, port=port, runtime=runtime, threads=threads,
               allow_incompatible=allow_incompatible, search_params={"nprobe": nprobe, "efSearch": ef_search},
               max_upload_bytes=int(max_upload_mb * 2**20), max_k=max_k, access_log=access_log,
               log_level=log_level, verify=verify, reload_interval=reload_interval,
               log=lambda message: console.print(escape(message).replace("warning:", "[yellow]warning:[/yellow]", 1)))


def register(app: typer.Typer) -> None:
    app.command("serve", help="Serve a visual search: HTTP API (POST /search, GET /items/{id}, "
                "GET /items/{id}/image, GET /health) and a web page at /.\n\n"
                "Example: hetsearch serve --index indexes/fmnist --query-model runs/q/model.pt --port 8000")(serve)
