"""Search strategies (`search.strategy`), by name: how one generation's candidates are proposed.

A strategy sees only the generation number, the current parents (the best architectures so far)
and `Moves`, the budget-legal operators of one generation: uniform random draws (narrowed until
they fit a budget far below the space's typical cost), SPOS mutations and uniform crossovers.
It never sees models, data or rewards (`hetsearch.nas.search` runs the loop, evaluates and ranks),
so a new strategy is one registered class:

    @register_strategy("my_strategy")
    class MyStrategy:
        def __init__(self, cfg: SearchConfig): ...
        def propose(self, generation, parents, moves) -> list[tuple[Architecture, str]]: ...

Built in:
- `evolution` (SPOS): generation 0 is `population` random architectures; each later generation
  is `mutations` mutants and `crossovers` children of the parents, topped up with random ones.
- `random`: `population` random architectures every generation (the baseline with the same
  number of evaluations).

All randomness comes from the one generator in `Moves` (seeded per generation by the search), so
a proposal depends only on the seed, the generation and the parents.
"""

from __future__ import annotations

from typing import Callable, Container, Protocol

import torch

from hetsearch.registries import STRATEGIES
from hetsearch.nas.space import Architecture, SearchSpace


class Moves:
    """The candidate operators of one generation. Every architecture they return is new (never
    evaluated, `known`, and not returned before in this generation) and within the budget
    [min_cost, max_cost] of `cost`; each operator gives up after `max_tries` draws per wanted
    candidate (rejection sampling), so it may return fewer than asked."""

    def __init__(self, space: SearchSpace, cost: Callable[[Architecture], float], generator: torch.Generator, *,
                 known: Container[str], max_cost: float | None, min_cost: float | None, max_tries: int,
                 mutation_prob: float):
        self.space, self.cost, self.generator, self.known = space, cost, generator, known
        self.max_cost, self.min_cost, self.max_tries, self.mutation_prob = max_cost, min_cost, max_tries, mutation_prob
        self.taken: set[str] = set()

    def within_budget(self, arch: Architecture) -> bool:
        c = self.cost(arch)
        return (self.max_cost is None or c <= self.max_cost) and (self.min_cost is None or c >= self.min_cost)

    def _accept(self, arch: Architecture) -> bool:
        """Take `arch` if it is new and within budget."""
        if arch.id in self.taken or arch.id in self.known or not self.within_budget(arch):
            return False
        self.taken.add(arch.id)
        return True

    def _shrink(self, arch: Architecture) -> Architecture:
        """Narrow randomly chosen layers (random smaller width index) until `arch` fits under
        max_cost: random architectures for budgets far below the space's typical cost, where
        plain rejection sampling would almost never succeed."""
        g, widths = self.generator, list(arch.widths)
        for i in torch.randperm(len(widths), generator=g).tolist():
            if widths[i] > 0:
                widths[i] = int(torch.randint(widths[i], (), generator=g))
                arch = Architecture(arch.blocks, tuple(widths))
                if self.cost(arch) <= self.max_cost:
                    break
        return arch

    def random(self, count: int) -> list[Architecture]:
        """Uniform random architectures; over-budget draws are narrowed (`_shrink`), then checked."""
        out, tries = [], 0
        while len(out) < count and tries < count * self.max_tries:
            tries += 1
            arch = self.space.sample(self.generator)
            if self.max_cost is not None and self.cost(arch) > self.max_cost:
                arch = self._shrink(arch)
            if self._accept(arch):
                out.append(arch)
        return out

    def mutations(self, parents: list[Architecture], count: int) -> list[Architecture]:
        """Mutants (each layer resampled with `mutation_prob`) of uniformly chosen parents."""
        out, tries, g = [], 0, self.generator
        while parents and len(out) < count and tries < count * self.max_tries:
            tries += 1
            parent = parents[int(torch.randint(len(parents), (), generator=g))]
            arch = self.space.mutate(parent, self.mutation_prob, g)
            if self._accept(arch):
                out.append(arch)
        return out

    def crossovers(self, parents: list[Architecture], count: int) -> list[Architecture]:
        """Children (each layer from one of two distinct, uniformly chosen parents)."""
        out, tries, g = [], 0, self.generator
        while len(parents) > 1 and len(out) < count and tries < count * self.max_tries:
            tries += 1
            i, j = torch.randperm(len(parents), generator=g)[:2].tolist()
            arch = self.space.crossover(parents[i], parents[j], g)
            if self._accept(arch):
                out.append(arch)
        return out


Proposal = list[tuple[Architecture, str]]  # (architecture, how it was made: "random", "mutation", ...)


class Strategy(Protocol):
    def propose(self, generation: int, parents: list[Architecture], moves: Moves) -> Proposal:
        """The new candidates of `generation` (at most the population), each with its origin."""


StrategyFactory = Callable[..., Strategy]  # (cfg: SearchConfig) -> Strategy
register_strategy = STRATEGIES.register
strategy_names = STRATEGIES.names
check_strategy = STRATEGIES.check


def create_strategy(cfg) -> Strategy:
    """The strategy `cfg.strategy` (a SearchConfig) configured by `cfg`."""
    return STRATEGIES[cfg.strategy](cfg)


@register_strategy("evolution")
class Evolution:
    """SPOS evolution: random generation 0, then mutations + crossovers of the parents, topped up
    with random architectures to the population."""

    def __init__(self, cfg):
        self.population, self.n_mutations, self.n_crossovers = cfg.population, cfg.mutations, cfg.crossovers

    def propose(self, generation: int, parents: list[Architecture], moves: Moves) -> Proposal:
        out: Proposal = []
        if generation > 0:
            out += [(a, "mutation") for a in moves.mutations(parents, self.n_mutations)]
            out += [(a, "crossover") for a in moves.crossovers(parents, self.n_crossovers)]
        out += [(a, "random") for a in moves.random(self.population - len(out))]
        return out


@register_strategy("random")
class RandomSearch:
    """Random search: a population of new random architectures every generation."""

    def __init__(self, cfg):
        self.population = cfg.population

    def propose(self, generation: int, parents: list[Architecture], moves: Moves) -> Proposal:
        return [(a, "random") for a in moves.random(self.population)]
