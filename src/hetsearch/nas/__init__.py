"""CMP-NAS: compatibility-aware architecture search for light query models (docs/nas.md).

- space: `SearchSpace` (the `models.cmpnas_arch` layout plus sampling, mutation, crossover)
- supernet: the backbone `cmpnas_supernet` (one sampled path per training batch), registered
  when this package is imported; a searched path is the `models` backbone `cmpnas`
- cost, efficiency: exact FLOPs/params tables, measured latency tables; the registered
  efficiency predictors (`search.cost`)
- evaluator: inherited weights + BN recalibration -> M(a, a), M(a, g) on the validation split
  (the accuracy predictor)
- rewards, strategies, search: registered rewards (R1/R2/R3) and strategies (evolution, random);
  the resumable loop under a budget
- runner, retrain, pipeline, cli: `hetsearch nas ...` and the pipeline's NAS stages
"""

from hetsearch.nas import supernet  # noqa: F401  (registers the cmpnas_supernet backbone)
from hetsearch.nas.cost import ArchCost, CostTable, LatencyTable
from hetsearch.nas.efficiency import CostInputs, make_cost, register_cost
from hetsearch.nas.rewards import RewardConfig, make_reward, register_reward
from hetsearch.nas.search import SearchConfig, SearchResult, Searcher, search
from hetsearch.nas.space import Architecture, SearchSpace
from hetsearch.nas.strategies import Moves, register_strategy

__all__ = ["Architecture", "SearchSpace", "ArchCost", "CostTable", "LatencyTable", "CostInputs", "make_cost",
           "register_cost", "RewardConfig", "make_reward", "register_reward", "SearchConfig", "SearchResult",
           "Searcher", "search", "Moves", "register_strategy"]
