"""CMP-NAS: compatibility-aware architecture search for light query models (docs/nas.md).

- space: `SearchSpace`, `Architecture` (stable ids), sampling, mutation, crossover
- blocks: the block definitions shared by the supernet and standalone networks
- supernet: backbones `cmpnas_supernet` (one sampled path per training batch) and `cmpnas`
- cost: exact FLOPs/params tables, measured latency tables
- evaluator: inherited weights + BN recalibration -> M(a, a), M(a, g) on the validation split
- rewards, search: R1/R2/R3; evolution and random search under a budget, resumable
- runner, retrain, pipeline, cli: `hetsearch nas ...` and the pipeline's NAS stages
"""

from hetsearch.nas.cost import ArchCost, CostTable, LatencyTable
from hetsearch.nas.rewards import RewardConfig, make_reward
from hetsearch.nas.search import SearchConfig, SearchResult, Searcher, search
from hetsearch.nas.space import Architecture, SearchSpace

__all__ = ["Architecture", "SearchSpace", "ArchCost", "CostTable", "LatencyTable", "RewardConfig", "make_reward",
           "SearchConfig", "SearchResult", "Searcher", "search"]
