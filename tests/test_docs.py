"""The README is a front door and the docs hold together (issue 22, point 5).

The README stays short and starts with the two commands that set up and run everything; every
relative link in README.md and docs/ points at a file that exists; every page of docs/ is in the
site's navigation (mkdocs.yml). The site itself is built with `mkdocs build --strict` in .ci/run
(broken anchors, missing pages and unparsable docstrings fail there).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

MAX_README_LINES = 150
TWO_COMMANDS = [
    "bash scripts/setup.sh && .venv/bin/hetsearch pipeline configs/fashion_mnist/pipeline_quick.yaml",
    "bash scripts/setup.sh && .venv/bin/python -m pytest",
]

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")


def _markdown_files() -> list[Path]:
    return [README] + sorted(DOCS.rglob("*.md"))


def _links(text: str) -> list[str]:
    text = _CODE.sub("", _FENCE.sub("", text))  # links in code are examples, not links
    return _LINK.findall(text)


def _slug(heading: str) -> str:
    """GitHub's and Python-Markdown's anchor of a heading (lowercase, punctuation dropped, spaces -> -)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", text), re.M)}


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, \
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move details to a docs/ page and link it"
    assert lines[0].startswith("# "), "README.md starts with its title"
    body = [line for line in lines[1:] if line.strip()]
    assert body[:4] == ["```bash", *TWO_COMMANDS, "```"], \
        "README.md: the title is followed by a ```bash block with exactly the two set-up commands"


def test_the_two_commands_are_true():
    """The files the two commands name exist (scripts/setup.sh installs the `hetsearch` entry point)."""
    assert (ROOT / "scripts" / "setup.sh").is_file()
    assert (ROOT / "configs" / "fashion_mnist" / "pipeline_quick.yaml").is_file()
    scripts = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'hetsearch = "hetsearch.cli:main"' in scripts


def test_every_relative_link_resolves():
    broken = []
    for path in _markdown_files():
        text = path.read_text(encoding="utf-8")
        for target in _links(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = path if not file_part else (path.parent / file_part).resolve()
            where = f"{path.relative_to(ROOT)}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text(encoding="utf-8")):
                broken.append(f"{where} (no heading with that anchor)")
    assert broken == [], "broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_links():
    assert _links("see [a](b.md) and ![c](d.png \"t\") but not `[e](f.md)`") == ["b.md", "d.png"]
    assert _links("```\n[x](y.md)\n```\n[z](w.md#anchor)") == ["w.md#anchor"]
    assert _slug("How far the gap to the paragon closes (`bench/gap.py`)") == \
        "how-far-the-gap-to-the-paragon-closes-benchgappy"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node] if node.endswith(".md") else []
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def test_every_docs_page_is_in_the_site_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = set(_nav_pages(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if p.parent.name != "results"}
    assert sorted(pages - nav) == [], "add these pages to the nav of mkdocs.yml"
    assert sorted(nav - pages) == [], "mkdocs.yml names pages that do not exist"
