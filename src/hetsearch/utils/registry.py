"""One registry type behind every pluggable family: backbones, data sets, heads, task losses,
compatibility methods, search strategies, rewards and efficiency predictors (`hetsearch list`).

    BACKBONES = Registry("backbone", config_key="model.backbone")

    @BACKBONES.register("my_net")
    def my_net(*, in_chans, image_size):
        '''A small convolutional net (one line: what `hetsearch list` shows).'''

    BACKBONES.names()               # ["my_net", ...], sorted
    BACKBONES.describe("my_net")    # the one-line description
    BACKBONES.check(cfg.backbone)   # one ConfigError line naming the valid choices
    BACKBONES[cfg.backbone]         # the registered entry (checked)

Rules, the same for every family:
- a name is registered once: a second, different entry under the same name is a ValueError
  (registering the very same object again is allowed: a module imported twice);
- every member has a one-line description: ``description=`` when registering, else the entry's
  own docstring (its first paragraph, on one line); a member with neither is a ValueError;
- an unknown name is a `ConfigError` of one line: ``<config key>: unknown <kind> 'x'; known: a, b``
  (plus the family's ``hint``, e.g. where more members come from).

A registry imports nothing: its members register when the module defining them is imported (the
package's ``__init__`` imports its built-in members). A built-in member is also *declared*
beforehand (`declare`: its name, one-line description and defining module; `hetsearch.registries`),
so that names can be listed and checked without importing the implementation (and torch): a typo
in a config fails in a fraction of a second. Looking a member up (`get`) still needs its module
imported; nothing is loaded by name.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Callable, Generic, Iterator, Optional, TypeVar

from hetsearch.errors import ConfigError

T = TypeVar("T")


def one_line(text: Optional[str]) -> str:
    """The first paragraph of a docstring (or any text) on one line; "" for None."""
    if not text:
        return ""
    paragraph = inspect.cleandoc(text).split("\n\n", 1)[0]
    return " ".join(paragraph.split())


class Registry(Generic[T]):
    """Named entries of one family (see the module doc)."""

    def __init__(self, kind: str, config_key: str, *, hint: str = ""):
        self.kind, self.config_key, self.hint = kind, config_key, hint
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}
        self._modules: dict[str, str] = {}  # declared name -> the module whose import registers it

    def register(self, name: str, *, description: Optional[str] = None) -> Callable[[T], T]:
        """Decorator: register the decorated function or class as ``name``."""
        def decorator(entry: T) -> T:
            return self.add(name, entry, description=description)

        return decorator

    def add(self, name: str, entry: T, *, description: Optional[str] = None) -> T:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind}: a registered name is a non-empty string, got {name!r}")
        if name in self._entries:
            if self._entries[name] is entry:
                return entry
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        # a declared member keeps its declared line: `hetsearch list` reads the same before and after the import
        text = (self._descriptions.get(name, "") if name in self._modules else "") or one_line(description) \
            or one_line(getattr(entry, "__doc__", None))
        if not text:
            raise ValueError(f"{self.kind} {name!r}: give it a one-line description (a docstring, or "
                             "description=... when registering)")
        self._entries[name] = entry
        self._descriptions[name] = text
        return entry

    def declare(self, name: str, module: str, description: str) -> None:
        """A member that ``import module`` registers: known by name (`check`, `names`, `members`)
        before that import; `get` needs the import done."""
        if name in self._modules and self._modules[name] != module:
            raise ValueError(f"{self.kind} {name!r} is declared twice ({self._modules[name]}, {module})")
        if not one_line(description):
            raise ValueError(f"{self.kind} {name!r}: declare it with a one-line description")
        self._modules[name] = module
        self._descriptions.setdefault(name, one_line(description))

    @contextlib.contextmanager
    def temporary(self) -> Iterator["Registry[T]"]:
        """Members registered inside the ``with`` block are unregistered at its end (tests)."""
        saved = dict(self._entries), dict(self._descriptions), dict(self._modules)
        try:
            yield self
        finally:
            self._entries, self._descriptions, self._modules = saved

    def names(self) -> list[str]:
        return sorted(self._entries.keys() | self._modules.keys())

    def describe(self, name: str) -> str:
        self.check(name)
        return self._descriptions[name]

    def members(self) -> list[tuple[str, str]]:
        """(name, one-line description) of every member, sorted by name."""
        return [(name, self._descriptions[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._modules

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def unknown(self, name: object) -> ConfigError:
        """The one-line error for a name that is not registered."""
        hint = f" {self.hint}" if self.hint else ""
        return ConfigError(f"{self.config_key}: unknown {self.kind} {name!r}; known: {', '.join(self.names())}{hint}")

    def check(self, name: object) -> None:
        if name not in self:
            raise self.unknown(name)

    def get(self, name: str) -> T:
        self.check(name)
        if name not in self._entries:
            raise LookupError(f"{self.kind} {name!r} is registered by {self._modules[name]}, which is not "
                              "imported yet: import it (its package's __init__ does) before looking it up")
        return self._entries[name]

    __getitem__ = get
