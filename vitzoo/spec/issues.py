"""What a rejected spec raises: one :class:`SpecIssue` per problem, each at its file position.

A module of its own because every other part of the spec layer raises these (YAML parsing,
validation, the compatibility and budget checks), and none of them should have to import
another's machinery to do so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecIssue:
    """One problem: where it is (file, line, column, spec path) and what to change."""

    path: str
    message: str
    file: str = "<spec>"
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        return f"{where}  {self.path or '<root>'}: {self.message}"


class SpecError(ValueError):
    """A spec is invalid. ``issues`` holds every problem found, each at its file position."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))
