"""CMP-NAS search space, blocks, supernet and cost model (tiny, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from hetsearch.errors import ConfigError
from hetsearch.models.cost import count_flops, count_params
from hetsearch.models import create_model
from hetsearch.nas.cost import CostTable, LatencyTable
from hetsearch.nas.evaluator import recalibrate_bn
from hetsearch.nas.space import Architecture, SearchSpace
from hetsearch.nas.supernet import standalone_from_supernet

SMALL = dict(stage_layers=[1, 2, 2, 1])  # the default 28 px space with fewer layers


def test_architecture_id_round_trip_and_errors():
    space = SearchSpace.for_input(28)
    arch = space.sample(torch.Generator().manual_seed(0))
    assert Architecture.from_id(arch.id) == arch and space.parse(arch.id) == arch
    assert len(arch) == space.num_layers == 11
    with pytest.raises(ConfigError, match="token"):
        Architecture.from_id("30-q1")
    with pytest.raises(ConfigError, match="layers"):
        space.parse("30-30")
    with pytest.raises(ConfigError, match="width index"):
        space.parse("-".join(["39"] * space.num_layers))
    with pytest.raises(ConfigError, match="unknown option"):
        SearchSpace.for_input(28, stage_chanels=[8])


def test_flops_table_equals_flop_counter_on_random_architectures():
    """Cost table == torch.utils.flop_counter (count_flops) and ModelMeta's parameter convention,
    on 24 random architectures of the default 28x28 space, embedding head included."""
    space = SearchSpace.for_input(28)
    table = CostTable(space, image_size=28, in_chans=1, embedding_dim=128)
    g = torch.Generator().manual_seed(1)
    archs = [space.sample(g) for _ in range(22)] + [table.extreme(), table.extreme(largest=True)]
    for arch in archs:
        model = create_model("cmpnas", num_classes=10, backbone_args={"arch": arch.id})
        cost = table(arch)
        assert cost.flops == count_flops(model, (1, 1, 28, 28)), arch.id
        assert cost.params == count_params(model.backbone) + count_params(model.embedding_head), arch.id
    lo, hi = table.range()
    assert lo == table(table.extreme()).flops and hi == table(table.extreme(largest=True)).flops
    assert lo <= table(space.smallest()).flops <= table(space.largest()).flops <= hi


def test_flops_table_other_input_sizes_and_channels():
    space = SearchSpace.for_input(32, stem_stride=1, stage_channels=[16, 24], stage_layers=[1, 2],
                                  stage_strides=[2, 2], last_channels=0, widths=[0.5, 1.0])
    table = CostTable(space, image_size=32, in_chans=3, embedding_dim=32)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        arch = space.sample(g)
        model = create_model("cmpnas", num_classes=5, in_chans=3, image_size=32, embedding_dim=32,
                             backbone_args={"arch": arch.id, **space.to_dict()})
        assert table.flops(arch) == count_flops(model, (1, 3, 32, 32))


@pytest.mark.parametrize("share_kernels", [True, False])
def test_standalone_network_equals_supernet_path(share_kernels):
    torch.manual_seed(0)
    supernet = create_model("cmpnas_supernet", num_classes=10, backbone_args={**SMALL, "share_kernels": share_kernels})
    x = torch.rand(8, 1, 28, 28)
    supernet.train()
    for _ in range(2):  # a few training forwards give the BNs non-trivial statistics
        supernet(x)
    supernet.eval()
    space = supernet.backbone.space
    g = torch.Generator().manual_seed(3)
    for arch in [space.sample(g) for _ in range(3)] + [space.largest(), space.smallest()]:
        supernet.backbone.set_path(arch)
        standalone = standalone_from_supernet(supernet, arch).eval()
        assert torch.allclose(supernet(x), standalone(x), atol=1e-5), arch.id
    supernet.backbone.set_path(None)


def test_supernet_samples_a_path_per_training_forward_deterministically():
    args = {**SMALL, "seed": 7}
    a = create_model("cmpnas_supernet", num_classes=10, backbone_args=args).train()
    x = torch.rand(4, 1, 28, 28)
    paths = []
    for _ in range(4):
        a(x)
        paths.append(a.backbone.last_path.id)
    assert len(set(paths)) > 1 and int(a.backbone.path_step) == 4
    # the step counter travels in the state dict: a restored model continues the same sequence
    b = create_model("cmpnas_supernet", num_classes=10, backbone_args=args).train()
    b.load_state_dict(a.state_dict())
    b(x)
    assert b.backbone.last_path == a.backbone.path_for_step(4)
    assert [a.backbone.path_for_step(i).id for i in range(4)] == paths
    # eval mode without a fixed path runs the eval architecture and samples nothing
    a.eval()
    a(x)
    assert a.backbone.last_path == a.backbone.eval_arch and int(a.backbone.path_step) == 4


def test_supernet_flops_range_and_warmup():
    args = {**SMALL, "sample_mflops": [0.6, 1.0], "warmup_steps": 10,
            "warmup_arch": "-".join(["31"] * 6)}
    model = create_model("cmpnas_supernet", num_classes=10, backbone_args=args)
    net = model.backbone
    table = CostTable(net.space, image_size=28, embedding_dim=128)
    assert net.path_for_step(0) == net.warmup_arch  # keep probability 1 at step 0
    assert net.keep_probability(5) == pytest.approx(0.5) and net.keep_probability(20) == 0.0
    for step in range(30):
        assert 0.6e6 <= table.flops(net.path_for_step(step)) <= 1.0e6
    with pytest.raises(ConfigError, match="outside"):
        create_model("cmpnas_supernet", num_classes=10, backbone_args={**SMALL, "sample_mflops": [100, 200]})


def test_bn_recalibration_changes_running_stats_not_weights():
    torch.manual_seed(0)
    model = create_model("cmpnas_supernet", num_classes=10, backbone_args=SMALL)
    space = model.backbone.space
    arch = space.sample(torch.Generator().manual_seed(4))
    model.backbone.set_path(arch)
    model.eval()
    params = {k: v.clone() for k, v in model.named_parameters()}
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    batches = [torch.rand(16, 1, 28, 28) for _ in range(2)]
    recalibrate_bn(model, batches)
    assert not model.training
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in params.items())
    after = {k: v for k, v in model.state_dict().items() if "running_" in k}
    assert any(not torch.equal(stats[k], after[k]) for k in stats)
    assert momenta == [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # cumulative average: the stem BN's running mean is the mean of the per-batch means
    stem_in = [model.backbone.stem.conv((b - model.input_mean) / model.input_std) for b in batches]
    expected = torch.stack([s.mean(dim=(0, 2, 3)) for s in stem_in]).mean(0)
    assert torch.allclose(model.backbone.stem.bn.running_mean, expected, atol=1e-5)
    # recalibrating twice on the same batches gives the same statistics (nothing accumulates)
    recalibrate_bn(model, batches)
    again = {k: v for k, v in model.state_dict().items() if "running_" in k}
    assert all(torch.allclose(after[k], again[k], atol=1e-6) for k in after)


def test_latency_table_predicts_positive_latency():
    space = SearchSpace.for_input(28, stage_layers=[1, 1, 1, 1], widths=[0.5, 1.0])
    table = LatencyTable.measure(space, image_size=28, repeats=2, warmup=1)
    restored = LatencyTable.from_dict(table.to_dict())
    arch = space.sample(torch.Generator().manual_seed(0))
    assert restored(arch) == table(arch) > 0


def _fresh(code: str) -> dict:
    """Run `code` in a fresh interpreter (no module imported by other tests) and return the JSON
    it prints last."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_searched_network_builds_and_loads_without_the_search(tmp_path):
    """A searched architecture's model (backbone `cmpnas`) lives in `models`: building it,
    saving it, loading the checkpoint, exporting it (TorchScript) and loading either as a query
    encoder import no `hetsearch.nas` module; the supernet backbone
    registers only with `hetsearch.nas` and says so when it is missing."""
    arch = "-".join(["31", "52", "x0", "70", "32", "51"])
    code = f"""
import json, sys
from hetsearch.errors import ConfigError
from hetsearch.models import create_model, load_checkpoint, save_checkpoint
model = create_model("cmpnas", num_classes=3, backbone_args={{"arch": "{arch}", "stage_layers": [1, 2, 2, 1]}})
save_checkpoint(r"{tmp_path / 'q.pt'}", model, classes=["a", "b", "c"])
loaded = load_checkpoint(r"{tmp_path / 'q.pt'}")
import pathlib, numpy as np, torch
from hetsearch.export.exporter import write_torchscript
from hetsearch.export.runtime import load_query_encoder
write_torchscript(loaded, pathlib.Path(r"{tmp_path / 'q.ts'}"))
x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
reference = np.asarray(load_query_encoder(r"{tmp_path / 'q.pt'}").embed(x))
same = bool(np.allclose(np.asarray(load_query_encoder(r"{tmp_path / 'q.ts'}").embed(x)), reference, atol=1e-5))
try:
    create_model("cmpnas_supernet", num_classes=3)
    error = None
except ConfigError as exc:
    error = str(exc)
print(json.dumps({{"arch": loaded.model.backbone.arch.id, "error": error, "same": same,
                  "nas": sorted(m for m in sys.modules if m.startswith("hetsearch.nas"))}}))
"""
    result = _fresh(code)
    assert result["arch"] == arch and result["nas"] == [] and result["same"] is True
    assert "cmpnas_supernet" in result["error"] and "hetsearch.nas" in result["error"]
    assert "\n" not in result["error"]


def test_standalone_net_of_models_is_the_supernets_path_class():
    """One definition of the standalone network: the supernet cuts paths out as the `models`
    class that the `cmpnas` backbone builds, with the same parameter names."""
    from hetsearch.models.cmpnas import CmpNasNet

    supernet = create_model("cmpnas_supernet", num_classes=10, backbone_args=SMALL)
    arch = supernet.backbone.space.sample(torch.Generator().manual_seed(5))
    cut = supernet.backbone.extract(arch)
    built = create_model("cmpnas", num_classes=10, backbone_args={**SMALL, "arch": arch.id}).backbone
    assert type(cut) is CmpNasNet and type(built) is CmpNasNet
    assert list(cut.state_dict()) == list(built.state_dict())
