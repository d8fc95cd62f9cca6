"""The command line imports only what the command asked for: `hetsearch train` refuses a config
with an unknown registry name before torch is imported (issue 22), and each feature module adds
exactly the commands `hetsearch.cli._COMMAND_MODULES` says it does."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import typer

from hetsearch.cli import _COMMAND_MODULES, command_names

QUERY_CONFIG = "configs/fashion_mnist/query_shufflenetv2_x0_5.yaml"
# runs the CLI in a fresh interpreter and reports whether torch was imported by the time it exited
PROBE = ("import sys\nfrom hetsearch.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n"
         "    code = exc.code\nprint('torch imported:', 'torch' in sys.modules, file=sys.stderr)\nsys.exit(code)\n")


@pytest.mark.parametrize("module", sorted(_COMMAND_MODULES))
def test_each_feature_module_adds_the_commands_declared_for_it(module):
    app = typer.Typer()
    importlib.import_module(module).register(app)
    assert command_names(app) == set(_COMMAND_MODULES[module])


@pytest.mark.parametrize("override, key", [("compat.method=nonsense", "compat.method: unknown method 'nonsense'"),
                                           ("compat.method=bct+nonsense", "compat.method: unknown method"),
                                           ("model.backbone=resnet1", "model.backbone: unknown backbone 'resnet1'"),
                                           ("model.head=cos", "model.head: unknown head 'cos'"),
                                           ("train.task_loss=triplet", "train.task_loss: unknown task loss"),
                                           ("data.source=imagenet", "data.source: unknown data set 'imagenet'")])
def test_train_refuses_an_unknown_name_in_one_line_before_torch_and_data(override, key):
    done = subprocess.run([sys.executable, "-c", PROBE, "train", QUERY_CONFIG, override],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "torch imported: False"
    assert len(lines) == 2 and lines[0].startswith(f"error: {key}"), lines
    assert "data:" not in done.stdout + done.stderr


def test_each_declared_built_in_member_is_registered_by_its_module():
    """hetsearch.registries declares the built-in members (names checked before torch loads): each
    declared module, once imported, has registered that name, and nothing undeclared is built in."""
    from hetsearch.registries import _BUILT_IN

    for registry, members in _BUILT_IN.items():
        for name, (module, _) in members.items():
            importlib.import_module(module)
            assert registry.get(name) is not None, (registry.kind, name, module)
    import hetsearch.compat, hetsearch.data, hetsearch.models, hetsearch.nas, hetsearch.train  # noqa: E401,F401
    undeclared = {registry.kind: sorted(set(registry.names()) - set(members) - {"cmpnas_supernet"})
                  for registry, members in _BUILT_IN.items()}
    assert not any(undeclared.values()), undeclared
