"""`hetsearch serve` (HTTP API + web page over an index and a query model), `hetsearch query` and
`hetsearch verify`: the commands that search an index with a query model (checkpoint or export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hetsearch.errors import HetsearchError
from hetsearch.index.cli import VERIFY_HELP
from hetsearch.utils.terminal import Console

# emoji=False: item sources such as "fashion_mnist:train:12" must not turn into emoji (":train:")
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


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
    from hetsearch.index.verify import check_verify_option
    from hetsearch.serve.server import run_server

    check_verify_option(verify)

    run_server(index, query_model, host=host, port=port, runtime=runtime, threads=threads,
               allow_incompatible=allow_incompatible, search_params={"nprobe": nprobe, "efSearch": ef_search},
               max_upload_bytes=int(max_upload_mb * 2**20), max_k=max_k, access_log=access_log,
               log_level=log_level, verify=verify, reload_interval=reload_interval,
               log=lambda message: console.print(escape(message).replace("warning:", "[yellow]warning:[/yellow]", 1)))


def verify(index: Path = typer.Option(..., "--index", "-i", help="index folder"),
           query_model: Path = typer.Option(..., "--query-model", "-q",
                                            help="query model: checkpoint (.pt) or an exported .onnx / TorchScript file"),
           runtime: str = typer.Option("auto", help="auto | torch | onnx | torchscript"),
           warn_only: bool = typer.Option(False, "--warn-only", help="print a warning instead of failing"),
           as_json: bool = typer.Option(False, "--json", help="print the measurement as JSON")):
    from hetsearch.export.runtime import load_query_encoder
    from hetsearch.index.gallery import open_index
    from hetsearch.index.verify import enforce, verify_query_model

    encoder = load_query_encoder(query_model, runtime=runtime)
    gallery = open_index(index, query_meta=encoder.meta, allow_incompatible=True)
    result = verify_query_model(gallery, encoder)
    if as_json:
        print(json.dumps({"query_model": encoder.meta.model_id, "gallery_model": gallery.gallery_model_id,
                          **result.to_dict()}, indent=2))
    message = enforce(result, encoder.meta.model_id, gallery.gallery_model_id, refuse=not warn_only)
    if message:
        err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)
    elif not as_json:
        console.print(escape(result.summary(encoder.meta.model_id, gallery.gallery_model_id)), soft_wrap=True)


def _query_files(paths: List[Path]) -> list[Path]:
    """The query images: files as given, folders replaced by every image in them (recursively)."""
    from hetsearch.data.files import list_images

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise HetsearchError(f"{path}: a folder without image files; give image files or a folder of them")
            files.extend(found)
        else:
            files.append(path)
    return files


def _print_hits(path: Path, row, query_model_id: str) -> None:
    table = Table(title=Text(f"{path}  (query model {query_model_id})"))
    for column, justify in (("rank", "right"), ("id", "right"), ("score", "right"), ("label", "left"),
                            ("path", "left")):
        table.add_column(column, justify=justify)
    for rank, hit in enumerate(row, start=1):
        table.add_row(str(rank), str(hit.id), f"{hit.score:.4f}", Text(hit.label or ""), Text(hit.source))
    console.print(table)


def query(index: Path = typer.Option(..., "--index", "-i", help="index folder"),
          query_model: Path = typer.Option(..., "--query-model", "-q",
                                           help="query model: checkpoint (.pt) or an exported .onnx / TorchScript file"),
          images: List[Path] = typer.Argument(..., help="query image file(s), or folders of them"),
          k: int = typer.Option(10, "--k", "-k", min=1, help="results per query"),
          as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
          runtime: str = typer.Option("auto", help="auto | torch | onnx | torchscript"),
          allow_incompatible: bool = typer.Option(False, "--allow-incompatible",
                                                  help="search even with a query model not trained for this "
                                                       "index's gallery model (experiments only)"),
          nprobe: Optional[int] = typer.Option(None, help="ivf index: lists visited per query"),
          ef_search: Optional[int] = typer.Option(None, help="hnsw index: efSearch"),
          verify_mode: str = typer.Option("off", "--verify", help=VERIFY_HELP)):
    import numpy as np

    from hetsearch.export.runtime import load_query_encoder
    from hetsearch.index.verify import run_verification
    from hetsearch.index.gallery import open_index
    from hetsearch.data.decode import read_image_file

    encoder = load_query_encoder(query_model, runtime=runtime)
    gallery = open_index(index, query_meta=encoder.meta, allow_incompatible=allow_incompatible,
                         search_params={"nprobe": nprobe, "efSearch": ef_search})
    for message in gallery.warnings + run_verification(gallery, encoder, verify_mode):
        err_console.print(f"[yellow]warning:[/yellow] {escape(message)}")
    decode = encoder.preprocessing.decode_spec()  # the model's size, channels, resize mode, background
    images = _query_files(images)
    hits = []
    for start in range(0, len(images), 256):
        batch = np.stack([read_image_file(path, decode) for path in images[start:start + 256]])
        hits.extend(gallery.search(encoder.embed(batch), k))
    if as_json:
        print(json.dumps({"index": str(index), "query_model": encoder.meta.model_id,
                          "gallery_model": gallery.gallery_model_id,
                          "queries": [{"image": str(path), "results": [h.to_dict() for h in row]}
                                      for path, row in zip(images, hits)]}, indent=2))
        return
    for path, row in zip(images, hits):
        _print_hits(path, row, encoder.meta.model_id)


def register(app: typer.Typer) -> None:
    app.command("query", help="Search an index with query images and print the top-k items.\n\n"
                "Example: hetsearch query --index indexes/fmnist --query-model runs/q/model.pt shoe.png")(query)
    app.command("verify", help="Measure a query model against the index's gallery model on a stored sample "
                "of the gallery (M(q, g) vs the recorded M(g, g)); fails when it is near chance, whatever the "
                "model's metadata declares.\n\nExample: hetsearch verify --index indexes/fmnist --query-model "
                "runs/q/model.onnx")(verify)
    app.command("serve", help="Serve a visual search: HTTP API (POST /search, GET /items/{id}, "
                "GET /items/{id}/image, GET /health) and a web page at /.\n\n"
                "Example: hetsearch serve --index indexes/fmnist --query-model runs/q/model.pt --port 8000")(serve)
