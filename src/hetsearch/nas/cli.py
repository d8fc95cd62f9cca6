"""`hetsearch nas ...` commands (CMP-NAS). Supernet training is `hetsearch train <supernet.yaml>`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

nas_app = typer.Typer(no_args_is_help=True, help="CMP-NAS: compatibility-aware architecture search "
                                                 "(supernet: `hetsearch train configs/fashion_mnist/supernet.yaml`).")


@nas_app.command("search", help="Search a trained supernet under a FLOPs/latency budget; resumes an interrupted "
                                "search.\n\nExample: hetsearch nas search configs/fashion_mnist/search.yaml search.max_cost=1.9")
def search_cmd(config: Path = typer.Argument(..., help="search YAML, e.g. configs/fashion_mnist/search.yaml"),
               overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. search.strategy=random")):
    from hetsearch.nas.runner import SearchRunConfig, run_search
    from hetsearch.utils.typed_config import load_config

    cfg = load_config(SearchRunConfig, config, overrides or [])
    result = run_search(cfg, resume=True)
    best = result.best
    typer.echo(f"best {best['arch']}  reward {best['reward']:.4f}  hetero R@1 {best['hetero_recall_at_1']:.4f}  "
               f"homo R@1 {best['homo_recall_at_1']:.4f}  {best['cost']:.3f} {cfg.search.cost}  "
               f"({len(result.records)} evaluations) -> {cfg.run_dir / 'best.json'}, Pareto plot "
               f"{cfg.run_dir / 'pareto.png'}")


@nas_app.command("plot", help="(Re)draw a search's Pareto plot (MFLOPs vs heterogeneous vs homogeneous accuracy "
                              "of every evaluated path, the winner marked), with other nets marked.\n\nExample: "
                              "hetsearch nas plot runs/fashion_mnist/cmpnas_search --mark "
                              "'ShuffleNetV2 x0.5=1.61,0.87,0.88'")
def plot_cmd(run_dir: Path = typer.Argument(..., help="a search's folder (evaluated.jsonl, best.json)"),
             out: Optional[Path] = typer.Option(None, help="PNG to write (default RUN_DIR/pareto.png)"),
             mark: Optional[List[str]] = typer.Option(None, help="LABEL=MFLOPS,HETERO,HOMO (repeatable)"),
             metric: str = typer.Option("recall_at_1", help="recall_at_1 | map_at_r")):
    from hetsearch.nas.plots import plot_search

    marks = []
    for item in mark or []:
        label, _, values = item.rpartition("=")
        try:
            mflops, hetero, homo = (float(v) for v in values.split(","))
        except ValueError:
            raise typer.BadParameter(f"--mark {item!r}: expected LABEL=MFLOPS,HETERO,HOMO") from None
        marks.append({"label": label, "mflops": mflops, f"hetero_{metric}": hetero, f"homo_{metric}": homo})
    typer.echo(f"wrote {plot_search(run_dir, out, marks=marks, metric=metric)}")


@nas_app.command("retrain", help="Train the searched architecture as a query model (ordinary training config, "
                                 "backbone replaced).\n\nExample: hetsearch nas retrain configs/fashion_mnist/retrain.yaml "
                                 "runs/fashion_mnist/cmpnas_search/best.json")
def retrain_cmd(config: Path = typer.Argument(..., help="training YAML, e.g. configs/fashion_mnist/retrain.yaml"),
                best: Path = typer.Argument(..., help="best.json of a search"),
                overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides"),
                init: str = typer.Option("scratch", help="scratch | supernet (start from inherited weights)")):
    from hetsearch.config import TrainRunConfig
    from hetsearch.nas.retrain import retrain
    from hetsearch.utils.typed_config import load_config

    result = retrain(load_config(TrainRunConfig, config, overrides or []), best, init=init, resume=True)
    if result.meta is not None:
        typer.echo(f"saved {result.model_path}  id={result.meta.model_id}  {result.meta.flops / 1e6:.3f} MFLOPs")


@nas_app.command("evaluate", help="M(a, a) and M(a, g) of one architecture with inherited supernet weights on the "
                                  "validation split (BN recalibrated).")
def evaluate_cmd(supernet: Path = typer.Option(..., help="supernet checkpoint"),
                 gallery_model: Path = typer.Option(..., "--gallery-model", "-g", help="gallery model checkpoint"),
                 arch: List[str] = typer.Option(..., help="architecture id (repeatable)"),
                 device: str = typer.Option("auto")):
    from hetsearch.data import make_splits
    from hetsearch.eval.report import data_config_of
    from hetsearch.models import load_checkpoint
    from hetsearch.nas.evaluator import CandidateEvaluator
    from hetsearch.utils.device import resolve_device

    loaded = load_checkpoint(supernet)
    splits = make_splits(data_config_of(loaded))
    evaluator = CandidateEvaluator(loaded.model, load_checkpoint(gallery_model).model, splits.train, splits.val,
                                   device=resolve_device(device))
    space = loaded.model.backbone.space
    for a in arch:
        typer.echo(json.dumps(evaluator(space.parse(a))))


@nas_app.command("cost", help="FLOPs (2 x MACs) and parameters of architectures, from the cost table.")
def cost_cmd(arch: Optional[List[str]] = typer.Argument(None, help="architecture ids (none: the space's range)"),
             image_size: int = typer.Option(28), in_chans: int = typer.Option(1),
             embedding_dim: int = typer.Option(128),
             space_json: Optional[str] = typer.Option(None, "--space", help="search-space options as JSON")):
    from hetsearch.nas.cost import CostTable
    from hetsearch.nas.space import space_from_options

    space = space_from_options(image_size, json.loads(space_json) if space_json else None)
    table = CostTable(space, image_size=image_size, in_chans=in_chans, embedding_dim=embedding_dim)
    if not arch:
        lo, hi = table.range()
        typer.echo(json.dumps({"space": space.to_dict(), "num_architectures": space.size,
                               "mflops_min": lo / 1e6, "mflops_max": hi / 1e6}, indent=2))
        return
    for a in arch:
        cost = table(space.parse(a))
        typer.echo(json.dumps({"arch": a, "mflops": cost.flops / 1e6, "params": cost.params}))


@nas_app.command("sample", help="Random paths under a FLOPs budget, drawn as the search draws (no supernet "
                                "needed): the baseline a search must beat, and what to train when a search does not "
                                "pay (docs/nas.md, 'Does the search pay?').\n\nExample: hetsearch nas sample "
                                "configs/fashion_mnist/supernet.yaml --max-mflops 1.9 --out runs/random_path, then "
                                "hetsearch nas retrain configs/fashion_mnist/retrain.yaml runs/random_path/path_00.json")
def sample_cmd(config: Path = typer.Argument(..., help="the supernet's training YAML (its search space, input size "
                                                       "and embedding), e.g. configs/fashion_mnist/supernet.yaml"),
               overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides of CONFIG"),
               max_mflops: float = typer.Option(..., "--max-mflops", help="budget: whole-model MFLOPs at most"),
               min_mflops: Optional[float] = typer.Option(None, "--min-mflops", help="one path per equal FLOPs bin "
                                                                                   "of [min, max] (paths that differ)"),
               count: int = typer.Option(1, min=1, help="paths to draw"),
               seed: int = typer.Option(0, help="the draws depend only on the seed and the budget"),
               out: Optional[Path] = typer.Option(None, help="folder to write path_00.json, ... (each as a "
                                                             "search's best.json, for `hetsearch nas retrain`)")):
    from hetsearch.config import TrainRunConfig
    from hetsearch.nas.sampling import PathSpace, draw_paths
    from hetsearch.utils.io import atomic_write_json
    from hetsearch.utils.typed_config import load_config

    space = PathSpace.of_config(load_config(TrainRunConfig, config, overrides or []))
    drawn = draw_paths(space, count, max_mflops=max_mflops, min_mflops=min_mflops, seed=seed)
    for i, arch in enumerate(drawn):
        record = {**space.record(arch), "seed": seed, "max_mflops": max_mflops, "min_mflops": min_mflops}
        if out is not None:
            atomic_write_json(out / f"path_{i:02d}.json", record)
        typer.echo(json.dumps({k: record[k] for k in ("arch", "mflops", "params")}))
    if len(drawn) < count:
        typer.echo(f"drew {len(drawn)} of {count} paths under {max_mflops:g} MFLOPs (the rest not found in "
                   "the draws allowed): raise --max-mflops or ask for fewer", err=True)
    if out is not None:
        typer.echo(f"wrote {len(drawn)} path(s) to {out}; train one: hetsearch nas retrain CONFIG {out}/path_00.json")


@nas_app.command("latency-table", help="Measure CPU latency of every layer choice (for search.cost=latency_ms).")
def latency_cmd(out: Path = typer.Argument(..., help="JSON file to write"),
                image_size: int = typer.Option(28), in_chans: int = typer.Option(1),
                embedding_dim: int = typer.Option(128), batch_size: int = typer.Option(1),
                space_json: Optional[str] = typer.Option(None, "--space", help="search-space options as JSON")):
    from hetsearch.nas.cost import LatencyTable
    from hetsearch.nas.space import space_from_options
    from hetsearch.utils.io import atomic_write_json

    space = space_from_options(image_size, json.loads(space_json) if space_json else None)
    table = LatencyTable.measure(space, image_size=image_size, in_chans=in_chans, embedding_dim=embedding_dim,
                                 batch_size=batch_size)
    atomic_write_json(out, table.to_dict())
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(nas_app, name="nas")
