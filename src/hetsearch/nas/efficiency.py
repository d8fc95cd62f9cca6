"""Efficiency predictors (`search.cost`), by name: what the search's budget is measured in.

The search depends only on two predictors of a candidate (once-for-all style): an accuracy
predictor (`hetsearch.nas.evaluator.CandidateEvaluator`, inherited supernet weights) and an
efficiency predictor `cost(arch) -> float`, built here from `CostInputs`. A new cost is one
registered function:

    @register_cost("my_cost")
    def my_cost(inputs: CostInputs) -> Callable[[Architecture], float]: ...

Built in:
- `mflops`: exact FLOPs of the whole model (embedding head included), in millions, from the
  supernet's cost table (`hetsearch.nas.cost.CostTable`);
- `latency_ms`: predicted CPU latency in milliseconds, the sum of a measured per-layer table
  (`latency_table`: the JSON written by `hetsearch nas latency-table`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from hetsearch.errors import ConfigError
from hetsearch.registries import COSTS
from hetsearch.nas.cost import CostTable, LatencyTable
from hetsearch.nas.space import Architecture

CostPredictor = Callable[[Architecture], float]


@dataclass(frozen=True)
class CostInputs:
    """What an efficiency predictor may use."""

    table: CostTable                       # FLOPs/params of the space at the supernet's input size
    latency_table: Optional[str] = None    # JSON file of `hetsearch nas latency-table`


CostFactory = Callable[[CostInputs], CostPredictor]
register_cost = COSTS.register
cost_names = COSTS.names
check_cost = COSTS.check


def make_cost(name: str, inputs: CostInputs) -> CostPredictor:
    """The efficiency predictor `name` (`search.cost`) over `inputs`."""
    return COSTS[name](inputs)


@register_cost("mflops")
def mflops(inputs: CostInputs) -> CostPredictor:
    """Exact FLOPs of the whole model in millions, from the supernet's cost table."""
    table = inputs.table
    return lambda arch: table.flops(arch) / 1e6


@register_cost("latency_ms")
def latency_ms(inputs: CostInputs) -> CostPredictor:
    """Predicted CPU latency in ms: the sum of a measured per-layer table (`latency_table`)."""
    if not inputs.latency_table:
        raise ConfigError("search.cost latency_ms needs latency_table: <json from `hetsearch nas latency-table`>")
    table = LatencyTable.from_dict(json.loads(Path(inputs.latency_table).read_text()))
    return lambda arch: table(arch) * 1e3
