"""The git revision a result was made with (stdlib only, so bench workers import it fast).

Changes under the result and state folders do not make a checkout "uncommitted": a long study
rewrites docs/results/ while it runs, and the code it measures is what matters.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

OUTPUT_PATHS = ("docs/results", "bench/state")


def git_revision(root: str | Path | None = None, *, short: bool = False) -> str:
    """`git rev-parse HEAD` of the checkout holding `root` (default: this package's), with
    " + uncommitted changes" when tracked files outside OUTPUT_PATHS differ from it; "unknown"
    outside a git checkout."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    try:
        head = git("rev-parse", *(["--short"] if short else []), "HEAD")
        top = git("rev-parse", "--show-toplevel")
        excluded = [f":(exclude){top}/{p}" for p in OUTPUT_PATHS]
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", top, *excluded)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")
