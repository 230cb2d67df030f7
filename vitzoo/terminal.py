"""Consoles that wrap for a person and never for a pipe.

On a terminal rich fits tables to the window. Piped or redirected (``vitzoo list | grep``,
``> report.txt``) rich would assume 80 columns and fold names, paths and headers across lines,
which breaks ``grep`` and copy-paste; there the console is made wide enough that nothing wraps
or is truncated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.segment import Segment
from rich.table import Table

#: Width used when output is not a terminal: wider than any row vitzoo prints.
PIPE_WIDTH = 100_000


class PipeConsole(Console):
    """A console for a pipe or file: as wide as needed, and without the padding rich gives
    every table row up to the table's width (``vitzoo list | cat -A`` showed ~300 spaces and
    a border per row, so ``grep 'vit$'`` found nothing): tables lose their outer border, and
    the spaces then left at the end of each finished line are stripped."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        for obj in objects:
            if isinstance(obj, Table):
                obj.show_edge = False
        super().print(*objects, **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:  # rich's rendering hook
        lines = super()._render_buffer(buffer).split("\n")
        return "\n".join([line.rstrip(" ") for line in lines[:-1]] + lines[-1:])


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console = PipeConsole(stderr=stderr, soft_wrap=True, width=PIPE_WIDTH)
    return console


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 epoch``, ``3 epochs``, ``2 classes``."""
    return f"{count} {word}" if count == 1 else f"{count} {many or word + 's'}"
