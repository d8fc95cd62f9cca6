"""`hetsearch index build|add|remove|rebuild|info|check`, and the help of the `--verify` option that
`hetsearch query` and `hetsearch serve` share (those commands are in `hetsearch.serve.cli`: they load
query models through the export runtime, a layer above the index; the option's check and the
start-up verification, `check_verify_option` and `run_verification`, are in `hetsearch.index.verify`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hetsearch.errors import HetsearchError
from hetsearch.utils.terminal import Console

# emoji=False: item sources such as "fashion_mnist:train:12" must not turn into emoji (":train:")
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)
index_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Build and update a gallery index (FAISS + SQLite metadata + manifest).")

IMAGES_HELP = "folder of gallery images (recursive; the first-level sub-folder name is the label)"
CSV_HELP = "CSV with header path,label[,field...]: extra columns become the items' user fields"
# no "a:b:c" in help texts: rich renders ":train:" as an emoji
DATASET_HELP = ("a split of a registered data set, SOURCE:SPLIT: fashion_mnist:train (each item's source names the "
                "split and item number), image_folder:gallery with --data-root ROOT, csv:all with --data-root FILE")


def _index_params(nlist, nprobe, hnsw_m, ef_construction, ef_search, index_type: str) -> dict:
    given = {"nlist": nlist, "nprobe": nprobe, "M": hnsw_m, "efConstruction": ef_construction,
             "efSearch": ef_search}
    allowed = {"flat": (), "ivf": ("nlist", "nprobe"), "hnsw": ("M", "efConstruction", "efSearch")}[index_type] \
        if index_type in ("flat", "ivf", "hnsw") else ()
    wrong = [k for k, v in given.items() if v is not None and k not in allowed]
    if wrong:
        raise HetsearchError(f"--type {index_type}: option(s) for {', '.join(wrong)} do not apply "
                             f"(a {index_type} index takes {', '.join(allowed) or 'no parameters'})")
    return {k: v for k, v in given.items() if v is not None}


def _load_items(gallery, images: Optional[Path], csv: Optional[Path], dataset: Optional[str],
                data_root: Optional[str], limit: Optional[int], on_bad_image: str, progress: bool, select=None):
    from hetsearch.index.items import csv_items, dataset_items, folder_items

    chosen = [x for x in (images, csv, dataset) if x is not None]
    if len(chosen) != 1:
        raise HetsearchError("give exactly one of --images DIR, --csv FILE, --dataset SOURCE:SPLIT")
    if on_bad_image not in ("fail", "skip"):
        raise HetsearchError(f"--on-bad-image: got {on_bad_image!r}, expected fail or skip")
    prep = gallery.meta.spec.preprocessing  # the gallery model's size, channels, resize mode, background
    if dataset is not None:
        items = dataset_items(dataset, prep.channels, prep.image_size, root=data_root, limit=limit,
                              resize=prep.resize, background=prep.background, select=select)
    elif images is not None:
        items = folder_items(images, prep.channels, prep.image_size, prep.resize, on_bad_image=on_bad_image,
                             progress=progress, background=prep.background, limit=limit, select=select)
    else:
        items = csv_items(csv, prep.channels, prep.image_size, prep.resize, on_bad_image=on_bad_image,
                          progress=progress, background=prep.background, limit=limit, select=select)
    if items.skipped:
        err_console.print(f"[yellow]warning:[/yellow] skipped {len(items.skipped)} unreadable file(s), "
                          f"e.g. {escape(items.skipped[0])}")
    return items


def _summary(manifest: dict, path: Path) -> str:
    return escape(f"{path}: {manifest['item_count']} items, {manifest['index_type']} {manifest['index_params']}, "
                  f"gallery model {manifest['gallery_model_id']}")


@index_app.command("build", help="Embed a gallery with the gallery model and write a new index folder.\n\n"
                   "Example: hetsearch index build --gallery-model runs/fashion_mnist/gallery/model.pt "
                   "--dataset fashion_mnist:train --out indexes/fmnist")
def build(gallery_model: Path = typer.Option(..., "--gallery-model", "-g", help="gallery model checkpoint"),
          out: Path = typer.Option(..., "--out", "-o", help="index folder to write"),
          images: Optional[Path] = typer.Option(None, "--images", help=IMAGES_HELP),
          csv: Optional[Path] = typer.Option(None, "--csv", help=CSV_HELP),
          dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP),
          index_type: str = typer.Option("flat", "--type", help="flat (exact) | ivf | hnsw"),
          nlist: Optional[int] = typer.Option(None, help="ivf: number of lists (default ~4*sqrt(N))"),
          nprobe: Optional[int] = typer.Option(None, help="ivf: lists visited per query (default 16)"),
          hnsw_m: Optional[int] = typer.Option(None, "--hnsw-m", help="hnsw: links per node M (default 32)"),
          ef_construction: Optional[int] = typer.Option(None, help="hnsw: efConstruction (default 80)"),
          ef_search: Optional[int] = typer.Option(None, help="hnsw: efSearch (default 64)"),
          overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing index folder"),
          data_root: Optional[str] = typer.Option(None, help="--dataset: where the data set lives (data.root)"),
          limit: Optional[int] = typer.Option(None, help="index only the first N items (quick tries)"),
          on_bad_image: str = typer.Option("fail", help="fail | skip unreadable image files"),
          batch_size: int = typer.Option(256, help="images per embedding batch"),
          device: str = typer.Option("auto", help="auto | cpu | cuda"),
          progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars")):
    from hetsearch.index.shards import build_sharded
    from hetsearch.index.writer import build_index, check_new_index_path, embed_images
    from hetsearch.models import load_checkpoint
    from hetsearch.utils.device import resolve_device
    from hetsearch.utils.process_group import init_distributed

    params = _index_params(nlist, nprobe, hnsw_m, ef_construction, ef_search, index_type)
    gallery = load_checkpoint(gallery_model)
    device = resolve_device(device)
    ctx = init_distributed(device)
    if ctx.enabled:  # under torchrun: every process embeds a shard, rank 0 merges (index/shards.py)
        check_new_index_path(out, overwrite)
        source_key = json.dumps([str(images or csv or dataset), data_root, limit, on_bad_image])
        manifest = build_sharded(
            ctx, out, gallery, source_key,
            load_items=lambda shard: _load_items(gallery, images, csv, dataset, data_root, limit, on_bad_image,
                                                 progress and ctx.is_main, select=shard.select),
            embed=lambda items: embed_images(gallery.model, items.images, batch_size=batch_size, device=device,
                                             progress=progress and ctx.is_main),
            build=lambda items, vectors: build_index(out, gallery, items, index_type=index_type, params=params,
                                                     overwrite=overwrite, vectors=vectors))
        if ctx.is_main:
            console.print(f"built {_summary(manifest, out)} from {ctx.world_size} processes")
        return
    items = _load_items(gallery, images, csv, dataset, data_root, limit, on_bad_image, progress)
    manifest = build_index(out, gallery, items, index_type=index_type, params=params, overwrite=overwrite,
                           batch_size=batch_size, device=device, progress=progress)
    console.print(f"built {_summary(manifest, out)}")


@index_app.command("add", help="Embed more images with the index's gallery model and add them.\n\n"
                   "Example: hetsearch index add --index indexes/fmnist --images new_photos/")
def add(index: Path = typer.Option(..., "--index", "-i", help="index folder"),
        gallery_model: Optional[Path] = typer.Option(
            None, "--gallery-model", "-g", help="gallery model checkpoint (default: the path recorded at build)"),
        images: Optional[Path] = typer.Option(None, "--images", help=IMAGES_HELP),
        csv: Optional[Path] = typer.Option(None, "--csv", help=CSV_HELP),
        dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP),
        data_root: Optional[str] = typer.Option(None, help="--dataset: where the data set lives (data.root)"),
        limit: Optional[int] = typer.Option(None, help="add only the first N items"),
        on_bad_image: str = typer.Option("fail", help="fail | skip unreadable image files"),
        batch_size: int = typer.Option(256, help="images per embedding batch"),
        device: str = typer.Option("auto", help="auto | cpu | cuda"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
        allow_duplicates: bool = typer.Option(False, "--allow-duplicates",
                                              help="add items whose source is already in the index again "
                                                   "(default: skip them)")):
    from hetsearch.index.manifest import read_manifest
    from hetsearch.index.writer import add_items
    from hetsearch.index.storage import recover
    from hetsearch.models import load_checkpoint
    from hetsearch.utils.device import resolve_device

    if gallery_model is None:
        recover(index)
        recorded = read_manifest(index).get("gallery_model_path")
        if not recorded or not Path(recorded).is_file():
            raise HetsearchError(f"{index}: pass --gallery-model (the checkpoint recorded at build, {recorded}, "
                                 "is not there)")
        gallery_model = Path(recorded)
    gallery = load_checkpoint(gallery_model)
    items = _load_items(gallery, images, csv, dataset, data_root, limit, on_bad_image, progress)
    manifest, new_ids = add_items(index, gallery, items, batch_size=batch_size, device=resolve_device(device),
                                  progress=progress, allow_duplicates=allow_duplicates)
    duplicates = manifest["history"][-1].get("duplicates", 0)
    if duplicates:
        err_console.print(f"[yellow]warning:[/yellow] skipped {duplicates} item(s) already in the index (same "
                          "source); --allow-duplicates adds them again")
    console.print(f"added {len(new_ids)} items (ids {new_ids[0]}..{new_ids[-1]}); now {_summary(manifest, index)}")


@index_app.command("remove", help="Remove items by id and/or source.\n\n"
                   "Example: hetsearch index remove --index indexes/fmnist 12 13 --source photos/cat.jpg")
def remove(index: Path = typer.Option(..., "--index", "-i", help="index folder"),
           ids: Optional[List[int]] = typer.Argument(None, help="item ids"),
           source: Optional[List[str]] = typer.Option(None, "--source", help="an item source: a path (relative or "
                                                      "absolute) or a data-set item; repeatable"),
           strict: bool = typer.Option(False, "--strict", help="remove nothing when any id/source is unknown")):
    from hetsearch.index.writer import remove_items

    manifest, removed = remove_items(index, ids or [], source or [], strict=strict)
    not_found = manifest["history"][-1].get("not_found") or []
    if not_found:
        err_console.print(f"[yellow]warning:[/yellow] no items with id/source {escape(', '.join(not_found))} "
                          "(not removed; the others were)")
    console.print(f"removed {len(removed)} items; now {_summary(manifest, index)}")


@index_app.command("rebuild", help="Re-create the FAISS index with another type or parameters, from the "
                   "stored embeddings (no re-embedding).\n\nExample: hetsearch index rebuild --index "
                   "indexes/fmnist --type hnsw --ef-search 128")
def rebuild(index: Path = typer.Option(..., "--index", "-i", help="index folder"),
            index_type: str = typer.Option(..., "--type", help="flat | ivf | hnsw"),
            nlist: Optional[int] = typer.Option(None, help="ivf: number of lists"),
            nprobe: Optional[int] = typer.Option(None, help="ivf: lists visited per query"),
            hnsw_m: Optional[int] = typer.Option(None, "--hnsw-m", help="hnsw: links per node M"),
            ef_construction: Optional[int] = typer.Option(None, help="hnsw: efConstruction"),
            ef_search: Optional[int] = typer.Option(None, help="hnsw: efSearch")):
    from hetsearch.index.writer import rebuild_index

    manifest = rebuild_index(index, index_type, _index_params(nlist, nprobe, hnsw_m, ef_construction, ef_search,
                                                              index_type))
    console.print(f"rebuilt {_summary(manifest, index)}")


def _index_folder(positional: Optional[Path], option: Optional[Path]) -> Path:
    if positional is not None and option is not None and positional != option:
        raise HetsearchError(f"give the index folder once (got {positional} and --index {option})")
    folder = option or positional
    if folder is None:
        raise HetsearchError("give the index folder: --index DIR")
    return folder


@index_app.command("info", help="Show an index's manifest.\n\nExample: hetsearch index info --index indexes/fmnist")
def info(index_arg: Optional[Path] = typer.Argument(None, metavar="[DIR]", help="index folder (or --index)"),
         index: Optional[Path] = typer.Option(None, "--index", "-i", help="index folder"),
         as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON")):
    from hetsearch.index.manifest import read_manifest
    from hetsearch.index.storage import recover

    index = _index_folder(index_arg, index)
    recover(index)
    manifest = read_manifest(index)
    if as_json:
        print(json.dumps(manifest, indent=2))
        return
    table = Table(title=Text(str(index)), show_header=False)
    for key in ("gallery_model_id", "gallery_model_path", "embedding_dim", "normalization", "metric", "index_type",
                "index_params", "item_count", "image_shape", "created_at", "updated_at", "revision"):
        table.add_row(key, Text(str(manifest.get(key))))
    console.print(table)


@index_app.command("check", help="Verify every file of an index against its manifest (sizes, checksums, "
                   "shapes, counts); one line per problem naming the file and what to do. Exit code 1 when "
                   "any.\n\nExample: hetsearch index check --index indexes/fmnist")
def check(index_arg: Optional[Path] = typer.Argument(None, metavar="[DIR]", help="index folder (or --index)"),
          index: Optional[Path] = typer.Option(None, "--index", "-i", help="index folder")):
    from hetsearch.index.check import check_folder
    from hetsearch.index.manifest import read_manifest
    from hetsearch.index.storage import recover

    index = _index_folder(index_arg, index)
    recover(index)
    manifest = read_manifest(index)
    problems = check_folder(index, manifest, deep=True)
    for problem in problems:
        err_console.print(f"[red]damaged:[/red] {escape(problem.line(index))}", soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    checksums = "checksums match" if manifest.get("files") else "no checksums recorded (older index)"
    console.print(escape(f"{index}: ok ({manifest['item_count']} items, every file consistent with the manifest, "
                         f"{checksums})"), soft_wrap=True)


VERIFY_HELP = ("measure the query model against a stored sample of the gallery before searching: off | warn | "
               "refuse (refuse when it is near chance; see `hetsearch verify`)")


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
