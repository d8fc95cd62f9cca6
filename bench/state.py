"""Carry a long bench across sessions: save what a fresh checkout needs to resume it, restore it.

A campaign runs for hours, longer than one working session, and a new session starts from a fresh
checkout in which `runs/` (ignored by git) is empty. The runner (bench/runner.py) resumes from two
things: the row file of every finished run (`<runs>/<prefix>_rows/*.json`: a finished run is never
trained again; a bench's finished checks, `<runs>/checks/*.json`, likewise) and the models the unfinished runs depend on (the galleries: a retrained gallery
would be another model, and the rows scored against the old one would no longer be comparable).
`save` copies both into a tracked folder (default `bench/state/<name>`); `restore` puts them back.
Query models are not kept (their rows hold their numbers) unless a later run starts from them:
`--keep GLOB` (repeatable) adds the finished run folders it matches, e.g. the open-set query models
that the catalogue-refresh runs fine-tune (otherwise a fresh checkout would retrain them, and the
refresh would start from a retrained model, not the one its open-set row scored). An unfinished
run is saved as far as it got (`unfinished/`: a training's per-epoch `checkpoint_last.pt`, a search's
`state.json` and evaluated paths) and resumes there: a session's end no longer costs the hours of the
runs it interrupted. Each save replaces the last one's unfinished runs (finished ones have rows).
A finished search keeps its small record (`searches/`: best.json, the evaluated paths, its summary), so
its Pareto plot can be redrawn in a fresh checkout (`hetsearch nas plot`).

    python bench/state.py save --runs runs/bench --name gallery_aware \
        --keep "ga_open_set_shufflenetv2*" --keep "ga_open_set_cmpnas*"
    python bench/state.py restore --runs runs/bench --name gallery_aware
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("model.pt", "config.yaml", "summary.json", "metrics.jsonl")
# what an interrupted run resumes from: a training (hetsearch/train/resume.py), a search (hetsearch/nas/runner.py)
PROGRESS = {"checkpoint_last.pt": ("checkpoint_last.pt", "config.yaml", "metrics.jsonl"),
            "state.json": ("state.json", "evaluated.jsonl", "config.yaml")}
FINISHED = ("model.pt", "best.json")
SEARCH_RECORD = ("best.json", "best.yaml", "config.yaml", "evaluated.jsonl", "search_summary.json")


def result_folders(root: Path) -> list[Path]:
    """The folders of finished runs' rows and of a bench's finished checks (small JSON files)."""
    return sorted({*root.glob("*_rows"), *root.glob("checks")})


def model_folders(runs: Path, keep: tuple[str, ...] = ()) -> list[Path]:
    """Finished gallery runs (their folder name starts with "gallery") and the finished runs matching
    a `keep` pattern (model.pt written)."""
    found = {p for pattern in ("gallery*", *keep) for p in runs.glob(pattern)}
    return sorted(p for p in found if (p / "model.pt").is_file())


def unfinished_folders(runs: Path) -> list[Path]:
    """Run folders (at any depth) with progress written but no finished output."""
    found = {marker.parent for name in PROGRESS for marker in runs.rglob(name)}
    return sorted(p for p in found if not any((p / name).exists() for name in FINISHED))


def search_folders(runs: Path) -> list[Path]:
    """Finished searches (best.json written), at any depth."""
    return sorted(marker.parent for marker in runs.rglob("best.json"))


def copy_files(source: Path, target: Path, names: tuple[str, ...]) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
            copied.append(str(target / name))
    return copied


def save_unfinished(runs: Path, state: Path) -> list[str]:
    target_root = state / "unfinished"
    shutil.rmtree(target_root, ignore_errors=True)
    saved = []
    for folder in unfinished_folders(runs):
        target = target_root / folder.relative_to(runs)
        target.mkdir(parents=True, exist_ok=True)
        names = {n for marker, files in PROGRESS.items() if (folder / marker).exists() for n in files}
        for name in sorted(names):
            if (folder / name).is_file():
                shutil.copy2(folder / name, target / name)
                saved.append(str(target / name))
    return saved


def restore_unfinished(runs: Path, state: Path) -> list[str]:
    """Put each saved unfinished run back unless the run folder already holds progress of its own."""
    restored, root = [], state / "unfinished"
    markers = {m for name in PROGRESS for m in root.rglob(name)} if root.is_dir() else set()
    for folder in sorted({m.parent for m in markers}):
        target = runs / folder.relative_to(root)
        if any((target / name).exists() for name in (*FINISHED, *PROGRESS)):
            continue
        target.mkdir(parents=True, exist_ok=True)
        for item in folder.iterdir():
            if item.is_file():
                shutil.copy2(item, target / item.name)
                restored.append(str(target / item.name))
    return restored


def save(runs: Path, state: Path, keep: tuple[str, ...] = ()) -> list[str]:
    saved = save_unfinished(runs, state)
    for rows in result_folders(runs):
        target = state / rows.name
        target.mkdir(parents=True, exist_ok=True)
        for row in rows.glob("*.json"):
            shutil.copy2(row, target / row.name)
            saved.append(str(target / row.name))
    for folder in model_folders(runs, keep):
        saved += copy_files(folder, state / "models" / folder.name, KEEP)
    for folder in search_folders(runs):
        saved += copy_files(folder, state / "searches" / folder.relative_to(runs), SEARCH_RECORD)
    return saved


def restore(runs: Path, state: Path) -> list[str]:
    restored = []
    for rows in result_folders(state):
        target = runs / rows.name
        target.mkdir(parents=True, exist_ok=True)
        for row in rows.glob("*.json"):
            if not (target / row.name).exists():
                shutil.copy2(row, target / row.name)
                restored.append(str(target / row.name))
    for folder in sorted((state / "models").glob("*")) if (state / "models").is_dir() else []:
        target = runs / folder.name
        if (target / "model.pt").exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for item in folder.iterdir():
            shutil.copy2(item, target / item.name)
            restored.append(str(target / item.name))
    searches = state / "searches"
    for folder in search_folders(searches) if searches.is_dir() else []:
        target = runs / folder.relative_to(searches)
        if not (target / "best.json").exists():
            restored += copy_files(folder, target, SEARCH_RECORD)
    return restored + restore_unfinished(runs, state)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("save", "restore"))
    p.add_argument("--runs", required=True, help="the bench's runs folder, e.g. runs/bench")
    p.add_argument("--name", required=True, help="state folder name under bench/state/")
    p.add_argument("--keep", action="append", default=[], metavar="GLOB",
                   help="save: also the finished run folders matching GLOB (query models later runs start from)")
    args = p.parse_args(argv)
    runs, state = Path(args.runs), ROOT / "bench" / "state" / args.name
    done = save(runs, state, tuple(args.keep)) if args.action == "save" else restore(runs, state)
    print(f"[state] {args.action}: {len(done)} files ({state} <-> {runs})")


if __name__ == "__main__":
    main()
