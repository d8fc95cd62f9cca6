"""Layering: the server loads no training code (docs/architecture.md, "Layers").

Each check runs in a fresh interpreter, so modules imported by other tests cannot hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# modules the serving path must never load: training, search, compatibility losses, augmentation
FORBIDDEN = ("hetsearch.train", "hetsearch.nas", "hetsearch.compat", "hetsearch.data.augment")


def _loaded_modules(module: str) -> list[str]:
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('hetsearch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["hetsearch.serve.app", "hetsearch.serve.server"])
def test_serving_loads_no_training_code(module):
    loaded = _loaded_modules(module)
    assert module in loaded
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == [], f"importing {module} loads {bad}"


def test_export_loads_no_index_code():
    """Export reads the model's preprocessing from the model itself, and a caller passes an index's
    images for the parity check: `import hetsearch.export` loads no `hetsearch.index` module."""
    loaded = _loaded_modules("hetsearch.export")
    assert "hetsearch.export.exporter" in loaded
    assert [m for m in loaded if m == "hetsearch.index" or m.startswith("hetsearch.index.")] == []


@pytest.mark.parametrize("module, name", [
    ("hetsearch.compat.contract", None), ("hetsearch.eval._modules", None), ("hetsearch.compat.grid", None),
    ("hetsearch.config", "from_dict"), ("hetsearch.config", "load_config"), ("hetsearch.eval.cost", "count_flops"),
    ("hetsearch.eval", "count_params"), ("hetsearch.export.runtime", "META_KEY"),
    ("hetsearch.compat", "check_pair")])
def test_each_name_has_one_import_path(module, name):
    """The temporary re-exports are gone (issue 22): a name is imported from the module defining it."""
    import importlib

    if name is None:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(module)
    else:
        assert not hasattr(importlib.import_module(module), name)


def test_augmentation_is_imported_from_its_module_only():
    import hetsearch.data

    # the lazy `hetsearch.data.BatchAugment` is gone (issue 14): the trainer imports data.augment
    assert not hasattr(hetsearch.data, "BatchAugment") and not hasattr(hetsearch.data, "__getattr__")
