"""No lazy imports that could hide a cycle (issue 14; docs/architecture.md, "Layers").

Outside the command-line modules (`hetsearch/cli.py` and each package's `cli.py`, which import
lazily to keep `hetsearch --help` fast), no function imports a `hetsearch` module, nothing loads a
module by name (`importlib.import_module`, `__import__`, a module `__getattr__`), and a function
imports a third-party package only when the package is on the allow-list below: optional or slow
to import, and needed by that function only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hetsearch

PACKAGE = Path(hetsearch.__file__).parent

# top-level package -> (the files whose functions may import it, why); keep in step with
# docs/architecture.md, "Layers"
ALLOWED_LAZY = {
    "faiss": (("eval/knn.py",), "the optional FAISS kNN backend (TorchExactIP needs no FAISS)"),
    "onnx": (("export/exporter.py",), "only writing an ONNX file needs it"),
    "onnxruntime": (("export/encoders.py",), "only the ONNX Runtime query encoder needs it"),
    "timm": (("models/backbones.py",), "slow to import; only the timm backbones need it"),
    "torchvision": (("models/backbones.py", "data/fashion_mnist.py"),
                    "slow to import; only the torchvision backbones and the Fashion-MNIST download need it"),
    "matplotlib": (("eval/grid.py", "nas/plots.py"), "slow to import; only the heat-map and the search's "
                                                     "Pareto plot need it"),
    "schemathesis": (("serve/fuzz.py",), "a test-time dependency of the API fuzzer"),
    "hypothesis": (("serve/fuzz.py",), "a test-time dependency of the API fuzzer"),
    "rich": (("eval/embed.py", "index/items.py"), "progress bars of long loops, off the serving path"),
    "uvicorn": (("serve/server.py",), "only starting the server needs it, loading the service does not"),
}


def _is_cli(path: Path) -> bool:
    return path.name == "cli.py"


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not _is_cli(p))


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return ["hetsearch" if node.level else (node.module or "")]  # a relative import is our own
    return []


def _function_imports() -> list[tuple[str, int, str, str]]:
    """(file, line, function, imported module) for every import inside a function."""
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                for module in _imported(node):
                    found.append((str(path.relative_to(PACKAGE)), node.lineno, fn.name, module))
    return found


def test_the_scan_sees_the_package():
    assert len(_sources()) > 50
    assert any(module.startswith("faiss") for *_, module in _function_imports())


def test_no_function_imports_a_hetsearch_module():
    bad = [f"{file}:{line} {fn}() imports {module}" for file, line, fn, module in _function_imports()
           if module == "hetsearch" or module.startswith("hetsearch.")]
    assert bad == [], "move these imports to module level (fix the structure if that makes a cycle):\n" + \
        "\n".join(bad)


def test_lazy_third_party_imports_are_on_the_allow_list():
    bad = [f"{file}:{line} {fn}() imports {module}" for file, line, fn, module in _function_imports()
           if not module.startswith("hetsearch") and file not in ALLOWED_LAZY.get(module.split(".")[0], ((), ""))[0]]
    assert bad == [], "import these at module level, or add the package to ALLOWED_LAZY (and docs/" \
                      "architecture.md) with the reason:\n" + "\n".join(bad)


def test_every_allowed_lazy_import_is_used():
    used = {(file, module.split(".")[0]) for file, _, _, module in _function_imports()}
    stale = [(file, name) for name, (files, _) in ALLOWED_LAZY.items() for file in files if (file, name) not in used]
    assert stale == [], f"remove these from ALLOWED_LAZY (and docs/architecture.md): {stale}"


def test_no_module_is_loaded_by_name():
    bad = []
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            call = node.func if isinstance(node, ast.Call) else None
            name = getattr(call, "attr", None) or getattr(call, "id", None)
            if name in ("import_module", "__import__"):
                bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}()")
        bad += [f"{path.relative_to(PACKAGE)}:{node.lineno} module __getattr__" for node in tree.body
                if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
    assert bad == [], "import these modules where they are used (module level):\n" + "\n".join(bad)


def test_the_allow_list_is_documented():
    layers = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    missing = [name for name in ALLOWED_LAZY if f"`{name}`" not in layers]
    assert missing == [], f"docs/architecture.md, 'Layers': list the allowed lazy imports {missing}"


def test_test_only_packages_are_not_runtime_dependencies():
    """pytorch-metric-learning cross-checks our losses and metrics in the tests only (issue 22): it
    is in the dev extra, not in the runtime dependencies, and no module of the package imports it."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("pytorch-metric-learning") for dep in project["dependencies"])
    assert any(dep.startswith("pytorch-metric-learning") for dep in project["optional-dependencies"]["dev"])
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "pytorch_metric_learning" for n in names), path
