"""A named registry of factories, for the search layer's strategies, rewards and costs.

    STRATEGIES = Registry("search strategy", config_key="search.strategy")
    @STRATEGIES.register("evolution")
    def evolution(cfg): ...
    STRATEGIES.check(cfg.strategy)          # one ConfigError line listing the choices
    STRATEGIES[cfg.strategy](cfg)
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from hetsearch.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, config_key: str):
        self.kind, self.config_key = kind, config_key
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def check(self, name: str) -> None:
        if name not in self._entries:
            raise ConfigError(f"{self.config_key}: got {name!r}, expected one of {', '.join(self.names())}")

    def __getitem__(self, name: str) -> T:
        self.check(name)
        return self._entries[name]
