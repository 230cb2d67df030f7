"""What a rejected spec raises: one :class:`SpecIssue` per problem, each at its file position.

A module of its own because every other part of the spec layer raises these (YAML parsing,
validation, the compatibility and budget checks), and none of them should have to import
another's machinery to do so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SpecIssue:
    """One problem: where it is (file, line, column, spec path) and what to change."""

    path: str
    message: str
    file: str = "<spec>"
    line: int | None = None
    column: int | None = None

    @classmethod
    def at(
        cls,
        path: tuple[Any, ...],
        message: str,
        file: str = "<spec>",
        positions: Mapping[tuple[Any, ...], tuple[int, int]] | None = None,
    ) -> SpecIssue:
        """The issue at spec ``path``, on the line of that path or of its nearest parent
        written in the file (a default the user never wrote has no line of its own)."""
        positions = positions or {}
        probe = path
        while probe and probe not in positions:
            probe = probe[:-1]
        line, col = positions.get(probe, (None, None))
        return cls(".".join(str(p) for p in path), message, file, line, col)

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        return f"{where}  {self.path or '<root>'}: {self.message}"


class SpecError(ValueError):
    """A spec is invalid. ``issues`` holds every problem found, each at its file position."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))
