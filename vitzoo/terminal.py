"""Consoles that wrap for a person and never for a pipe.

On a terminal rich fits tables to the window. Piped or redirected (``vitzoo list | grep``,
``> report.txt``) rich would assume 80 columns and fold names, paths and headers across lines,
which breaks ``grep`` and copy-paste; there the console is made wide enough that nothing wraps
or is truncated.
"""

from __future__ import annotations

from rich.console import Console

#: Width used when output is not a terminal: wider than any row vitzoo prints.
PIPE_WIDTH = 100_000


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, soft_wrap=True, width=PIPE_WIDTH)
    return console


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 epoch``, ``3 epochs``, ``2 classes``."""
    return f"{count} {word}" if count == 1 else f"{count} {many or word + 's'}"
