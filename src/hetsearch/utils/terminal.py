"""Output that reads well both on a terminal and in a log (CI, `| tee`, nohup, a file).

On a terminal: progress bars and tables at the terminal's width. Anywhere else: no progress bars
(their redraws would pile up into one line of thousands of characters; the trainer prints one line
per epoch instead) and no wrapping at 80 columns (rich's default width off a terminal), so a
table row stays one line.
"""

from __future__ import annotations

import sys
from typing import IO, Optional

import rich.console
from rich.console import ConsoleDimensions

__all__ = ["Console", "LOG_WIDTH", "is_terminal"]

LOG_WIDTH = 1000   # columns of a Console whose output is not a terminal: wide enough never to wrap a row


def is_terminal(stream: Optional[IO] = None) -> bool:
    """Whether `stream` (default: stderr, where progress bars draw) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


class Console(rich.console.Console):
    """rich's Console, `LOG_WIDTH` columns wide when its output is not a terminal (instead of 80).

    Decided at each print, not at construction: a module-level console follows where stdout goes
    (tests capture it; a command's output may be piped). An explicit `width=` still wins."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(LOG_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        rich.console.Console.size.fset(self, new_size)
