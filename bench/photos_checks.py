"""The photo-user checks of bench/photos.py (issue 21.3), each written to <runs>/checks/<name>.json
and quoted in docs/results/photos.md:

- index: `hetsearch index build --images EXPORT/train` with the closed-set gallery model, then
  `hetsearch evaluate --queries EXPORT/test --index` with the chosen query model (seed 0): the
  metrics must equal the bench's M(q, g) of that model exactly (the bench's final row; with
  --quick, the bench's scoring of the same models on the uncapped test protocol).
- templates: the bench trains the configs/image_folder/{gallery,query}.yaml recipe itself on the CIFAR-10
  source (photos.template_runs; closed set, seed 0); the templates must still hold the settings those
  rows were trained with (the differing keys are listed, and nothing is trained while any differ);
  then both are trained unchanged (only data.root=EXPORT; --quick adds caps and 1 epoch) from a scratch
  working folder and scored with `hetsearch evaluate`: M(g, g) and M(q, g) within 1 point of the
  bench's rows.

The exported folder (`hetsearch data export cifar10 EXPORT`) is made when missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import _shared
import protocols as P
from runner import Run

from hetsearch.config import TrainRunConfig
from hetsearch.utils.typed_config import load_config, to_dict

TEMPLATES = _shared.ROOT / "configs" / "image_folder"
TOLERANCE_POINTS = 1.0
# what a template must share with the bench's recipe (paths, names and the data source aside)
COMPARED = {"data": ("image_size", "channels", "val_fraction"), "model": None, "train": None,
            "compat": ("method", "weight", "bank", "gallery_aware", "linear_map"), "runtime": ("seed", "eval_every")}


def log(line: str) -> None:
    print(f"[photos checks] {line}", flush=True)


def cli(argv: list[str], threads: int, cwd: Path | None = None) -> str:
    """`hetsearch ARGV` in a child process (one torch thread per --threads); its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "hetsearch.cli", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=cwd or _shared.ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"hetsearch {' '.join(map(str, argv))} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def json_out(stdout: str) -> dict:
    """The JSON document of `hetsearch evaluate --json` (after its one-line data summary)."""
    return json.loads(stdout[stdout.index("{"):])


def ensure_export(path: Path, threads: int) -> Path:
    if not (path / "train").is_dir():
        log(f"exporting CIFAR-10 to {path}")
        cli(["data", "export", "cifar10", path], threads)
    return path.resolve()


def write_check(bench, name: str, check: dict) -> dict:
    folder = Path(bench.args.runs) / "checks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(check, indent=1, sort_keys=True, default=str))
    log(f"{name}: {json.dumps(check.get('summary'))}")
    return check


def final_row(bench, settings, protocol: str, model: str, method: str) -> dict | None:
    run = Run(protocol, model, method, 0, bench.args.epochs, "final", P.run_tag(settings, protocol, model))
    return bench.runner.finished(run)


def bench_scores(bench, settings, row: dict) -> dict:
    """The bench's M(q, g) of a final row: the row itself, or (--quick: the row is on capped data)
    the bench's scoring code (evaluate_loaded, as P.score_pair) on the uncapped test protocol."""
    if not bench.args.quick:
        return {k: row[k] for k in ("recall_at_1", "map_at_r")}
    from hetsearch.eval.report import evaluate_loaded
    from hetsearch.models import load_checkpoint

    closed = P.get_protocol("closed_set")
    uncapped = dataclasses.replace(settings, caps=())
    splits = P.splits_of(P.scoring_config(uncapped, closed, "final"))
    q = load_checkpoint(Path(settings.runs) / row["training_run"] / "model.pt")
    g = load_checkpoint(P.gallery_path(settings, closed, "final"))
    metrics = evaluate_loaded(q, g, splits, device=settings.device or "auto", embedding_cache={})["metrics"]
    return {k: metrics[k] for k in ("recall_at_1", "map_at_r")}


def index_check(bench, settings, chosen: dict) -> dict:
    """`hetsearch index build` + `hetsearch evaluate --queries --index` vs the bench's M(q, g)."""
    args = bench.args
    row = final_row(bench, settings, "closed_set", "shufflenetv2_x0_5", chosen["closed_set"]["method"])
    if row is None:
        return {"summary": "not run: the chosen closed-set query model (seed 0) has no final row yet"}
    export = ensure_export(Path(args.export), args.threads)
    gallery = P.gallery_path(settings, P.get_protocol("closed_set"), "final")
    query = Path(settings.runs) / row["training_run"] / "model.pt"
    index = Path(args.runs) / "checks" / f"index_{row['gallery_model']}"
    commands = [["index", "build", "-g", gallery, "--images", export / "train", "--out", index],
                ["evaluate", "-q", query, "--queries", export / "test", "--index", index, "--json"]]
    done = index.with_name(index.name + ".done")
    if not done.exists():  # (re)build: a folder left by a build cut short is replaced
        if index.exists():
            import shutil

            shutil.rmtree(index)
        cli(commands[0], args.threads)
        done.write_text(commands[0][2].__str__())
    cli_metrics = json_out(cli(commands[1], args.threads))["metrics"]
    mine = bench_scores(bench, settings, row)
    diff = {k: abs(cli_metrics[k] - v) for k, v in mine.items()}
    # Recall@1 is a count: equal exactly; MAP@R is a float mean, summed in another order (1e-9)
    agree = diff["recall_at_1"] == 0 and diff["map_at_r"] < 1e-6
    return {"summary": {"agree": agree, "recall_at_1_equal": diff["recall_at_1"] == 0,
                        "map_at_r_abs_diff": diff["map_at_r"], "cli": {k: cli_metrics[k] for k in mine}, "bench": mine,
                        "query_model": row["query_model"], "gallery_model": row["gallery_model"]},
            "commands": [" ".join(["hetsearch", *map(str, c)]) for c in commands],
            "num_queries": cli_metrics.get("num_queries"), "num_gallery": cli_metrics.get("num_gallery")}


def _section_diffs(template: dict, recipe: dict, keys) -> dict:
    out = {}
    for key in (keys or sorted(set(template) | set(recipe))):
        if template.get(key) != recipe.get(key):
            out[key] = {"template": template.get(key), "bench": recipe.get(key)}
    return out


def config_diffs(template: TrainRunConfig, recipe: TrainRunConfig) -> dict:
    """Keys (section.key) where a template differs from the bench's recipe (COMPARED)."""
    t, r = to_dict(template), to_dict(recipe)
    out = {}
    for section, keys in COMPARED.items():
        for key, diff in _section_diffs(t.get(section, {}), r.get(section, {}), keys).items():
            out[f"{section}.{key}"] = diff
    for path in ("model.pretrained_file",):
        out.pop(path, None)
    return out


def template_configs(export: Path) -> tuple[TrainRunConfig, TrainRunConfig]:
    root = [f"data.root={export}"]
    return (load_config(TrainRunConfig, TEMPLATES / "gallery.yaml", root),
            load_config(TrainRunConfig, TEMPLATES / "query.yaml", root))


def template_check(bench, settings, chosen: dict) -> dict:
    """The image_folder templates, unchanged but data.root, against the bench's rows of the same recipe
    (photos.template_runs: the templates trained by the bench on the CIFAR-10 source). One `hetsearch
    train` run is one draw: the query model is compared with the mean of the bench's seeds of the recipe
    (the export lists the photos in another order than the source, so even seed 0 is another draw)."""
    import photos

    args = bench.args
    (g_run,), q_runs = photos.template_runs(args)
    g_row, q_rows = bench.runner.finished(g_run), [bench.runner.finished(run) for run in q_runs]
    if g_row is None or None in q_rows:
        return {"summary": "not run: the bench's rows of the templates' recipe (closed set, seeds "
                           f"{args.template_seeds}) have not finished"}
    export = Path(args.export)
    runs = Path(photos.templates_settings(args).runs)
    # what the bench's rows were trained with (their saved configs) against the templates as they are now
    recipes = [load_config(TrainRunConfig, runs / row["training_run"] / "config.yaml", []) for row in (g_row, q_rows[0])]
    diffs = {name: config_diffs(t, r) for name, t, r in zip(("gallery", "query"), template_configs(export), recipes)}
    if any(diffs.values()) and not args.quick:
        return {"summary": "not run: the templates changed since the bench trained their recipe; rerun "
                           "bench/photos.py after removing its templates rows", "diffs": diffs}
    work = train_templates(args, ensure_export(export, args.threads))
    g, q = work / "runs/my_images/gallery/model.pt", work / "runs/my_images/query/model.pt"
    scores = {"gallery": json_out(cli(["evaluate", "-q", g, "-g", g, "--json"], args.threads, cwd=work)),
              "query": json_out(cli(["evaluate", "-q", q, "-g", g, "--json"], args.threads, cwd=work))}
    out = {name: compare(scores[name], rows) for name, rows in (("gallery", [g_row]), ("query", q_rows))}
    return {"summary": {k: {"template": v["template_recall_at_1"], "bench": v["bench_recall_at_1"],
                            "within_1_point": v["within_1_point"]} for k, v in out.items()},
            "details": out, "diffs": diffs, "bench_seeds": [row["seed"] for row in q_rows],
            "commands": [" ".join(["hetsearch", *map(str, cmd)]) for cmd in template_commands(args, export)],
            "working_folder": str(work), "quick": args.quick}


def template_commands(args, export: Path) -> list[list]:
    extra = [*bench_caps(), "train.epochs=1"] if args.quick else []
    return [["train", TEMPLATES / name, f"data.root={export}", *extra] for name in ("gallery.yaml", "query.yaml")]


def train_templates(args, export: Path) -> Path:
    """`hetsearch train` of both templates in the check's working folder; one folder per content of the
    templates: a check cut short resumes (--resume), a changed template starts afresh."""
    content = hashlib.sha256(b"".join((TEMPLATES / n).read_bytes() for n in ("gallery.yaml", "query.yaml")))
    work = (Path(args.runs) / "templates" / content.hexdigest()[:10]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for command, run in zip(template_commands(args, export), ("gallery", "query")):
        started = (work / "runs/my_images" / run / "checkpoint_last.pt").exists()
        cli([*command, "--resume"] if started else command, args.threads, cwd=work)
    return work


def compare(score: dict, rows: list[dict]) -> dict:
    """The template run's test Recall@1 against the mean of the bench's rows (and each row)."""
    mine, per_seed = score["metrics"]["recall_at_1"], [row["recall_at_1"] for row in rows]
    bench_r1 = sum(per_seed) / len(per_seed)
    spread = (sum((x - bench_r1) ** 2 for x in per_seed) / (len(per_seed) - 1)) ** 0.5 if len(per_seed) > 1 else 0.0
    return {"template_recall_at_1": mine, "bench_recall_at_1": round(bench_r1, 4),
            "bench_recall_at_1_by_seed": dict(zip((row["seed"] for row in rows), per_seed)),
            "bench_recall_at_1_std": round(spread, 4),
            "difference_points": round(100 * (mine - bench_r1), 2),
            "difference_points_by_seed": [round(100 * (mine - x), 2) for x in per_seed],
            "within_1_point": abs(100 * (mine - bench_r1)) <= TOLERANCE_POINTS,
            "protocol": score["protocol"].get("counts")}


def bench_caps() -> list[str]:
    import photos

    return list(photos.QUICK["caps"])


def check_done(name: str, result: dict, args) -> bool:
    """A check that ran is not redone; the templates check also reruns for other bench seeds (a
    result of before it compared with several seeds has none recorded: seed 0)."""
    if str(result.get("summary", "")).startswith("not run"):
        return False
    return name != "templates" or result.get("bench_seeds", [0]) == list(args.template_seeds)


def run_checks(bench, settings, chosen: dict) -> None:
    """Each check once (a check whose file says it passed or ran is not redone); a failure is recorded."""
    for name, check in (("index", index_check), ("templates", template_check)):
        path = Path(bench.args.runs) / "checks" / f"{name}.json"
        if path.exists() and check_done(name, json.loads(path.read_text()), bench.args):
            continue
        try:
            write_check(bench, name, check(bench, settings, chosen))
        except Exception as exc:  # a failed check must not stop the remaining seeds
            write_check(bench, name, {"summary": f"not run: failed: {type(exc).__name__}: {str(exc)[-800:]}"})
