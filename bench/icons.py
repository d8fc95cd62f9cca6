"""Second benchmark: colour icons drawn in two styles (emoji), new classes at query time.

Not photos: the package registries reachable here (PyPI, npm, Debian) ship no labelled colour
photo set (only loaders that download at run time). npm does ship the same emoji drawn by
different vendors as 64 px colour PNGs with transparency, identified by codepoint:

  * `emoji-datasource-google`  (Noto Emoji images, Apache-2.0)
  * `emoji-datasource-twitter` (Twemoji graphics, CC-BY 4.0)

(the `emoji-datasource-*` packages' code and data are MIT; the image licences are the vendors',
as the packages' README states). That is the issue's "icons drawn in two styles, query style vs
gallery style" case. The bench:

  1. fetches the two packages with `npm pack` into runs/icons/npm/ (skipped when the tarballs are
     there);
  2. builds an image folder in the layout `ROOT/{train,query,gallery}/CLASS/*` (classes = emoji
     codepoints drawn in every style): a seeded 75% of the emoji are training classes, with every
     style; the other 25% are new at query time: their query-style image (Twemoji) is the query,
     their gallery-style image (Noto) the gallery item. The PNGs are copied as they are (RGBA);
     the data layer composites their transparency on `data.background` (white);
  3. runs `configs/icons/pipeline.yaml` through the project's pipeline API (`hetsearch pipeline`):
     the gallery model (paragon), the query models (independent, BCT, L2, contrastive+relational,
     label-free contrastive+relational) and the compatibility grid of every pair;
  4. writes docs/results/icons.{json,md}: one row per (query model, gallery model) pair of the
     grid, timings, and the data set's description.

    python bench/icons.py                    # everything, ~40 min of CPU on 2 shared cores
    python bench/icons.py --build-only       # fetch and build the folder only
    python bench/icons.py --report-only      # rewrite the results from the finished pipeline
    python bench/icons.py --epochs 60 --gallery-from runs/icons/pipeline --out runs/icons/pipeline_e60 \
        --results-name icons_e60             # longer query models, the same paragon

Every step is resumable: finished stages of the pipeline are skipped, an interrupted training
resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CONFIG = ROOT / "configs" / "icons" / "pipeline.yaml"
NPM_DIR = Path("runs/icons/npm")
DATA_DIR = Path("runs/icons/data")
FOLDER_FORMAT = 1   # bump when the folder's content changes for the same options


@dataclass(frozen=True)
class Style:
    """One drawing style: the npm package that ships it and where its 64 px PNGs are inside."""

    name: str
    package: str
    version: str
    image_dir: str        # folder inside the tarball
    has_flag: str         # emoji.json field saying the style draws that emoji
    licence: str

    @property
    def tarball(self) -> str:
        return f"{self.package}-{self.version}.tgz"   # the name `npm pack` gives it


STYLES = {
    "google": Style("google", "emoji-datasource-google", "16.0.0", "package/img/google/64", "has_img_google",
                    "Noto Emoji images: Apache-2.0"),
    "twitter": Style("twitter", "emoji-datasource-twitter", "16.0.0", "package/img/twitter/64", "has_img_twitter",
                     "Twemoji graphics: CC-BY 4.0"),
}
EMOJI_TABLE = "package/emoji.json"


class IconsError(RuntimeError):
    """A step of the icons bench failed; the message is one line saying which and what to do."""


# ----------------------------------------------------------------------------- 1. fetch

def fetch_packages(styles: list[Style], dest: Path = NPM_DIR) -> dict[str, Path]:
    """`npm pack` each style's package into `dest` (skipped when its tarball is there)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for style in styles:
        path = dest / style.tarball
        if not path.is_file():
            npm = shutil.which("npm")
            if npm is None:
                raise IconsError(f"npm not found: install Node.js/npm (Debian: apt-get install npm), or put "
                                 f"{style.tarball} into {dest}/")
            print(f"[icons] npm pack {style.package}@{style.version} -> {dest}/", flush=True)
            done = subprocess.run([npm, "pack", f"{style.package}@{style.version}", "--pack-destination", str(dest)],
                                  capture_output=True, text=True)
            if done.returncode != 0 or not path.is_file():
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise IconsError(f"npm pack {style.package}@{style.version} failed ({last}); check the npm registry "
                                 "is reachable")
        out[style.name] = path
    return out


def read_package(tarball: Path, style: Style) -> tuple[list[dict], dict[str, bytes]]:
    """(the emoji table, {image file name: PNG bytes}) of one style's tarball."""
    table, images = None, {}
    prefix = style.image_dir.rstrip("/") + "/"
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name == EMOJI_TABLE:
                    table = json.loads(tar.extractfile(member).read())
                elif member.isfile() and member.name.startswith(prefix) and member.name.endswith(".png"):
                    images[member.name[len(prefix):]] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, json.JSONDecodeError) as exc:
        raise IconsError(f"{tarball}: cannot read ({exc}); delete it and run again to fetch it anew") from None
    if table is None or not images:
        raise IconsError(f"{tarball}: no {EMOJI_TABLE} or no PNGs under {prefix} (not a {style.package} tarball?)")
    return table, images


def icons_by_style(tarballs: dict[str, Path], styles: list[Style]) -> tuple[dict[str, dict[str, bytes]], dict]:
    """{style: {codepoint: PNG bytes}} for the emoji every style draws, and {codepoint: short name}."""
    per_style, names = {}, {}
    for style in styles:
        table, images = read_package(tarballs[style.name], style)
        icons = {}
        for entry in table:
            if entry.get(style.has_flag) and entry.get("image") in images:
                icons[entry["unified"]] = images[entry["image"]]
                names[entry["unified"]] = entry.get("short_name") or entry.get("name") or entry["unified"]
        per_style[style.name] = icons
    common = set.intersection(*(set(v) for v in per_style.values()))
    return {s: {c: v[c] for c in common} for s, v in per_style.items()}, {c: names[c] for c in common}


# ----------------------------------------------------------------------------- 2. the folder

def split_classes(classes: list[str], train_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded (training classes, held-out classes), each sorted; both non-empty."""
    if len(classes) < 2:
        raise IconsError(f"{len(classes)} emoji drawn in every style: need at least 2")
    order = sorted(classes)
    random.Random(seed).shuffle(order)
    n_train = min(len(order) - 1, max(1, round(train_fraction * len(order))))
    return sorted(order[:n_train]), sorted(order[n_train:])


def build_icon_folder(root: Path, icons: dict[str, dict[str, bytes]], *, query_style: str,
                      gallery_styles: list[str], train_fraction: float = 0.75, seed: int = 0,
                      names: dict[str, str] | None = None, sources: dict | None = None) -> dict:
    """Write `root/{train,query,gallery}/CLASS/STYLE.png` and `root/manifest.json`; return the manifest.

    `icons`: {style: {class: PNG bytes}}, the same classes in every style. Training classes get
    one image per style; a held-out class gets its `query_style` image in query/ and its
    `gallery_styles` images in gallery/. A folder built with the same inputs is kept as it is.
    """
    if query_style not in icons or any(s not in icons for s in gallery_styles) or query_style in gallery_styles:
        raise IconsError(f"styles: query {query_style!r} and gallery {gallery_styles} must be distinct styles of "
                         f"{sorted(icons)}")
    classes = sorted(set.intersection(*(set(v) for v in icons.values())))
    train, held_out = split_classes(classes, train_fraction, seed)
    digest = hashlib.sha256()
    for style in sorted(icons):
        for c in classes:
            digest.update(f"{style}/{c}".encode() + hashlib.sha256(icons[style][c]).digest())
    manifest = {"format": FOLDER_FORMAT, "layout": "ROOT/{train,query,gallery}/CLASS/STYLE.png",
                "styles": sorted(icons), "query_style": query_style, "gallery_styles": list(gallery_styles),
                "train_fraction": train_fraction, "seed": seed, "images_sha256": digest.hexdigest(),
                "classes": len(classes), "train_classes": len(train), "held_out_classes": len(held_out),
                "counts": {"train": len(train) * len(icons), "query": len(held_out),
                           "gallery": len(held_out) * len(gallery_styles)},
                "sources": sources or {}, "short_names": {c: (names or {}).get(c, c) for c in classes}}
    path = root / "manifest.json"
    if path.is_file() and json.loads(path.read_text()) == manifest:
        return manifest
    if root.exists():
        shutil.rmtree(root)   # a folder built from other inputs: rebuilt whole
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plan = [("train", c, s) for c in train for s in sorted(icons)]
    plan += [("query", c, query_style) for c in held_out]
    plan += [("gallery", c, s) for c in held_out for s in gallery_styles]
    for split, c, style in plan:
        folder = tmp / split / c
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{style}.png").write_bytes(icons[style][c])
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.rename(root)   # complete or absent: an interrupted build leaves only the .tmp folder
    return manifest


def prepare(root: Path = DATA_DIR, npm_dir: Path = NPM_DIR, query_style: str = "twitter",
            gallery_styles: tuple[str, ...] = ("google",), train_fraction: float = 0.75, seed: int = 0) -> dict:
    """Steps 1-2: the packages and the image folder (each skipped when done)."""
    styles = [STYLES[name] for name in (query_style, *gallery_styles)]
    tarballs = fetch_packages(styles, npm_dir)
    icons, names = icons_by_style(tarballs, styles)
    sources = {s.name: {"package": f"{s.package}@{s.version}", "licence": s.licence, "images": s.image_dir}
               for s in styles}
    manifest = build_icon_folder(root, icons, query_style=query_style, gallery_styles=list(gallery_styles),
                                 train_fraction=train_fraction, seed=seed, names=names, sources=sources)
    print(f"[icons] {root}: {manifest['classes']} emoji in {len(styles)} styles; {manifest['train_classes']} "
          f"training classes ({manifest['counts']['train']} images), {manifest['held_out_classes']} new classes "
          f"(query: {query_style}, gallery: {', '.join(gallery_styles)})", flush=True)
    return manifest


# ----------------------------------------------------------------------------- 3. the pipeline

METHOD_LABELS = {"none": "independent", "bct": "BCT", "l2": "L2", "contrastive+relational": "contrastive+relational"}


def run(args: argparse.Namespace) -> dict:
    """Step 3: `configs/icons/pipeline.yaml` through the pipeline API; returns its timings."""
    from hetsearch.pipeline import load_pipeline_config, run_pipeline

    cfg = load_pipeline_config(args.config, pipeline_overrides(args))
    if args.gallery_from:
        reuse_gallery(Path(args.gallery_from), Path(args.out), cfg.gallery.name or "gallery")
    skip = {n for n in (args.skip or "").split(",") if n}
    unknown = skip - {q.name for q in cfg.queries}
    if unknown:
        raise IconsError(f"--skip {sorted(unknown)}: no such query stage in {args.config} "
                         f"({', '.join(q.name or q.config for q in cfg.queries)})")
    cfg.queries = [q for q in cfg.queries if q.name not in skip]
    for stage in cfg.queries:
        stage.overrides = [*stage.overrides, *([f"train.epochs={args.epochs}"] if args.epochs else [])]
    if args.gallery_epochs:
        cfg.gallery.overrides = [*cfg.gallery.overrides, f"train.epochs={args.gallery_epochs}"]
    drop_stale_grid(Path(args.out), cfg)
    started = time.perf_counter()
    ctx = run_pipeline(cfg, log=lambda line: print(line, flush=True))
    return {"pipeline_wall": round(time.perf_counter() - started, 1), **ctx.timings_s}


def drop_stale_grid(out: Path, cfg) -> None:
    """The pipeline skips a grid that exists: remove one made for another set of models."""
    from hetsearch.utils.typed_config import read_yaml

    def name(stage) -> str:
        return stage.name or read_yaml(Path(cfg.base_dir) / stage.config).get("name", Path(stage.config).stem)

    grid_json = out / "grid" / "grid.json"
    if not grid_json.is_file():
        return
    have = {m["label"] for m in json.loads(grid_json.read_text())["models"]}
    want = {name(cfg.gallery), *(name(q) for q in cfg.queries)}
    if have != want:
        print(f"[icons] {grid_json}: made for other models ({sorted(have ^ want)} differ), made again", flush=True)
        shutil.rmtree(out / "grid")


def reuse_gallery(source_dir: Path, out: Path, name: str) -> None:
    """Copy a finished paragon run (SOURCE_DIR/NAME) into OUT, where the pipeline then skips it."""
    source, target = source_dir / name, out / name
    if (target / "model.pt").is_file():
        return
    if not (source / "model.pt").is_file():
        raise IconsError(f"--gallery-from {source_dir}: no finished {name}/model.pt there")
    shutil.copytree(source, target, dirs_exist_ok=True)
    print(f"[icons] paragon reused from {source} (not retrained)", flush=True)


def pipeline_overrides(args: argparse.Namespace) -> list[str]:
    out = [f"data.root={args.root}", f"output_dir={args.out}"]
    if args.runtime_seed is not None:
        out.append(f"runtime.seed={args.runtime_seed}")
    if args.threads:
        out.append(f"runtime.num_threads={args.threads}")
    if args.device:
        out.append(f"runtime.device={args.device}")
    return out


# ----------------------------------------------------------------------------- 4. results

def run_info(out: Path) -> dict[str, dict]:
    """Per run folder (stage name): method, label-free or not, seed, epochs, training seconds."""
    import yaml

    info = {}
    for summary_path in out.glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        cfg = yaml.safe_load((summary_path.parent / "config.yaml").read_text())
        compat = cfg.get("compat") or {}
        method = compat.get("method", "none")
        label_free = (cfg.get("train") or {}).get("task_loss") == "none"
        weight = float(compat.get("weight", 1.0))
        info[summary_path.parent.name] = {
            "method": METHOD_LABELS.get(method, method) + (" (label-free)" if label_free else "")
            + (f" (λ {weight:g})" if method != "none" and weight != 1.0 else ""),
            "seed": (cfg.get("runtime") or {}).get("seed"), "epochs": summary["final"]["epoch"],
            "train_seconds": round(summary["train_seconds"], 1),
            "train_img_per_s": summary["final"].get("images_per_second"),
            "train_accuracy": summary["final"].get("train_accuracy"),
            "backbone": f"{cfg['model']['backbone']} {cfg['model'].get('backbone_args') or ''}".strip()}
    return info


def result_rows(grid: dict, info: dict[str, dict], gallery_stage: str) -> list[dict]:
    """One row per (query model, gallery model) pair of the grid; pairs against the paragon first."""
    homo = {p["query"]: p["recall_at_1"] for p in grid["pairs"] if p["homogeneous"]}
    protocol = grid["protocol"]["protocol"]
    rows = []
    for p in grid["pairs"]:
        if p.get("skipped") or p.get("metrics") is None:
            continue
        q = info.get(p["query"], {})
        method = "paragon" if p["query"] == gallery_stage else q.get("method", p["query_method"])
        rows.append({"method": method, "label": p["query"], "gallery_label": p["gallery"],
                     "query_model": p["query_model"], "gallery_model": p["gallery_model"],
                     "recall_at_1": p["recall_at_1"], "map_at_r": p["map_at_r"], "map": p["map"],
                     "homo_recall_at_1": homo.get(p["query"]), "compatible": p["compatible"],
                     "gap_to_paragon": p["gap_to_paragon"] if p["gallery"] == gallery_stage else None,
                     "query_mflops": p["query_mflops"], "gallery_mflops": p["gallery_mflops"],
                     "flops_ratio": p["flops_ratio"], "declared_compatible": p["declared_compatible"],
                     "protocol": protocol, "seed": q.get("seed"), "epochs": q.get("epochs"),
                     "query_backbone": q.get("backbone"), "train_seconds": q.get("train_seconds"),
                     "train_img_per_s": q.get("train_img_per_s"), "train_accuracy": q.get("train_accuracy")})
    rows.sort(key=lambda r: (r["gallery_label"] != gallery_stage, r["method"] != "paragon", r["label"],
                             r["gallery_label"]))
    return rows


def embedding_diagnostics(models: list[dict], gallery_stage: str, items: int = 1024) -> list[dict]:
    """Raw (unnormalised) embeddings of the first `items` training images, for the paragon and the
    query models trained by regression (l2): what the L2 term pulls towards and how close it got."""
    import torch

    from hetsearch.data import make_splits
    from hetsearch.eval.report import data_config_of
    from hetsearch.models import load_checkpoint

    paths = {m["label"]: Path(m["path"]) for m in models}
    gallery = load_checkpoint(paths[gallery_stage])
    l2 = [m["label"] for m in models if "l2" in (m.get("compatibility") or "").split("+")]
    if not l2:
        return []
    images = make_splits(data_config_of(gallery)).train.images[:items].float() / 255
    with torch.no_grad():
        g = gallery.model.eval()(images, normalize=False)
        out_rows = [{"label": gallery_stage, "mean": g.mean().item(), "mean_square": (g ** 2).mean().item(),
                     "mse_to_gallery": 0.0, "mse_of_gallery_mean": ((g - g.mean(0)) ** 2).mean().item()}]
        for label in l2:
            q = load_checkpoint(paths[label]).model.eval()(images, normalize=False)
            out_rows.append({"label": label, "mean": q.mean().item(), "mean_square": (q ** 2).mean().item(),
                             "mse_to_gallery": ((q - g) ** 2).mean().item(), "mse_of_gallery_mean": None})
    return out_rows


def markdown(payload: dict) -> str:
    from hetsearch.utils.results import markdown_table

    rows = payload["rows"]
    gallery_stage = payload["gallery_stage"]
    main = [r for r in rows if r["gallery_label"] == gallery_stage]
    data = payload["data"]
    lines = ["# Second benchmark: colour icons in two styles (emoji), new classes at query time", "",
             f"Command: `{payload.get('measured_by') or payload['command']}`  ",
             *([f"(this report rewritten by `{_short(payload['command'])}`)  "] if payload.get("measured_by") else []),
             f"Machine: {payload['machine']}", "",
             "Data (not photos): " + payload["data_note"], "",
             "Protocol: " + "; ".join(f"{k}: {v}" for k, v in payload["protocol"].items()), "",
             "## Every query model against the paragon (gallery model)", "",
             "recall_at_1 / map_at_r: M(q, g), queries (query style) embedded by the query model, gallery items "
             "(gallery style) by the paragon; homo_recall_at_1: M(q, q), both sides by the query model. "
             f"With one gallery item per query (R = 1), MAP@R equals Recall@1 here. "
             f"Chance Recall@1: 1/{data['counts']['gallery']} = {1 / data['counts']['gallery']:.4f}.", "",
             markdown_table(main, ["method", "label", "recall_at_1", "map_at_r", "homo_recall_at_1", "compatible",
                                   "gap_to_paragon", "query_mflops", "gallery_mflops", "flops_ratio", "epochs",
                                   "train_accuracy", "train_seconds", "train_img_per_s"]),
             "## The compatibility grid: Recall@1, rows = query model, columns = gallery model", "",
             payload["matrix_md"], "",
             "Every pair (also the query models as galleries) is in `rows` of the JSON.", "",
             "Timings (s): " + ", ".join(f"{k} {v}" for k, v in payload["timings_s"].items()), ""]
    if payload.get("embedding_diagnostics"):
        lines += ["## What the L2 term regresses onto", "",
                  f"Raw (unnormalised) embeddings of the first {payload['diagnostic_items']} training images: mean and "
                  "mean square per coordinate, the L2 term's value (mean squared difference to the paragon's embedding "
                  "of the same image), and, for the paragon, the value of predicting its per-coordinate mean.", "",
                  markdown_table(payload["embedding_diagnostics"],
                                 ["label", "mean", "mean_square", "mse_to_gallery", "mse_of_gallery_mean"])]
    if payload.get("notes"):
        lines += [payload["notes"], ""]
    return "\n".join(lines)


def _short(command: str) -> str:
    """A command line without the text of its --notes (the notes are printed below the tables)."""
    head, sep, _ = command.partition(" --notes ")
    return head + (" --notes ..." if sep else "")


def matrix_markdown(grid: dict) -> str:
    labels = [m["label"] for m in grid["models"]]
    matrix = grid["matrix"]["recall_at_1"]
    lines = ["| query \\ gallery | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for label, values in zip(labels, matrix):
        lines.append(f"| {label} | " + " | ".join("" if v is None else f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace, manifest: dict, timings: dict) -> None:
    from hetsearch.utils.results import write_results

    out = Path(args.out)
    grid = json.loads((out / "grid" / "grid.json").read_text())
    summary = json.loads((out / "pipeline_summary.json").read_text())
    gallery_stage = next(iter(summary["models"]))
    rows = result_rows(grid, run_info(out), gallery_stage)
    sources = "; ".join(f"{s}: {v['package']} ({v['licence']})" for s, v in manifest["sources"].items())
    note = (f"{manifest['classes']} emoji drawn in styles {', '.join(manifest['styles'])} ({sources}), 64 px RGBA "
            f"PNGs composited on white. Training: {manifest['train_classes']} emoji (seeded "
            f"{manifest['train_fraction']:g}), every style ({manifest['counts']['train']} images). Evaluation on the "
            f"{manifest['held_out_classes']} other emoji, never trained on: queries = their "
            f"{manifest['query_style']} images, gallery = their {', '.join(manifest['gallery_styles'])} images.")
    protocol = {k: grid["protocol"][k] for k in ("protocol", "layout", "query", "gallery", "train", "counts")
                if k in grid["protocol"]}
    protocol["image_size"] = f"{args.image_size_note}"
    # a stage skipped by this call (finished earlier) keeps the time recorded by the call that ran it
    previous = _previous_timings(args.results_name)
    labels = {m["label"] for m in grid["models"]}
    timings = {**{k: v for k, v in previous.items() if k in labels and k not in timings}, **timings}
    measured_by = {}
    if args.report_only:
        previous = ROOT / "docs" / "results" / f"{args.results_name}.json"
        old = json.loads(previous.read_text()) if previous.is_file() else {}
        measured_by = {"measured_by": old.get("measured_by") or old.get("command")}
    write_results(args.results_name, protocol=protocol, rows=rows, timings_s=timings, markdown=markdown,
                  extra={"gallery_stage": gallery_stage, "data": {k: v for k, v in manifest.items() if k != "short_names"},
                         "data_note": note, "matrix_md": matrix_markdown(grid), "notes": args.notes or "",
                         "embedding_diagnostics": embedding_diagnostics(grid["models"], gallery_stage),
                         "diagnostic_items": 1024, **measured_by,
                         "models": grid["models"]})
    print((ROOT / "docs" / "results" / f"{args.results_name}.md").read_text())


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG), help="the pipeline config (default configs/icons/pipeline.yaml)")
    p.add_argument("--root", default=str(DATA_DIR), help="where the image folder is built (default runs/icons/data)")
    p.add_argument("--npm-dir", default=str(NPM_DIR), help="where the npm tarballs go (default runs/icons/npm)")
    p.add_argument("--out", default="runs/icons/pipeline", help="the pipeline's output_dir")
    p.add_argument("--query-style", default="twitter", choices=sorted(STYLES))
    p.add_argument("--gallery-styles", default="google", help="comma-separated styles of the gallery images")
    p.add_argument("--train-fraction", type=float, default=0.75, help="fraction of the emoji that are training classes")
    p.add_argument("--seed", type=int, default=0, help="seed of the class split")
    p.add_argument("--epochs", type=int, default=None, help="query-model epochs (default: configs/icons/query.yaml); with "
                                                             "another --out: finished stages are skipped whatever "
                                                             "their epochs")
    p.add_argument("--gallery-epochs", type=int, default=None, help="paragon epochs (default: configs/icons/gallery.yaml)")
    p.add_argument("--gallery-from", default=None, help="reuse the paragon of another --out folder (copied) "
                                                        "instead of training it again")
    p.add_argument("--results-name", default="icons", help="docs/results/NAME.{json,md} (default icons)")
    p.add_argument("--skip", default="", help="comma-separated query stages of the pipeline config not to run "
                                              "(e.g. query_l2,query_l2_w100)")
    p.add_argument("--runtime-seed", type=int, default=None,
                   help="runtime.seed of every model the pipeline trains (default: the config's, 0); the data split "
                        "stays (--seed); with --gallery-from, the query models' seed only")
    p.add_argument("--threads", type=int, default=None, help="runtime.num_threads (default: torch's)")
    p.add_argument("--device", default=None, help="runtime.device (default: auto)")
    p.add_argument("--build-only", action="store_true", help="fetch the packages and build the folder, then stop")
    p.add_argument("--report-only", action="store_true", help="rewrite docs/results/icons.* from the finished runs")
    p.add_argument("--notes", default="", help="a paragraph added to the Markdown report")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    try:
        manifest = prepare(Path(args.root), Path(args.npm_dir), args.query_style,
                           tuple(s for s in args.gallery_styles.split(",") if s), args.train_fraction, args.seed)
    except IconsError as exc:
        raise SystemExit(f"icons: {exc}") from None
    timings = {"fetch_and_build": round(time.perf_counter() - started, 1)}
    if args.build_only:
        return
    from hetsearch.utils.typed_config import read_yaml

    args.image_size_note = f"{read_yaml(Path(args.config)).get('data', {}).get('image_size')} px"
    if args.report_only:
        timings = _previous_timings(args.results_name)
    else:
        try:
            timings.update(run(args))
        except IconsError as exc:
            raise SystemExit(f"icons: {exc}") from None
        timings["bench_wall"] = round(time.perf_counter() - started, 1)
    report(args, manifest, timings)


def _previous_timings(name: str) -> dict:
    path = ROOT / "docs" / "results" / f"{name}.json"
    return json.loads(path.read_text()).get("timings_s", {}) if path.is_file() else {}


if __name__ == "__main__":
    main()
