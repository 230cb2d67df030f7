"""Spec text: reading a file, parsing it safely, knowing where each key was written, writing.

The one place a spec file is opened and parsed (:func:`read_spec_file`), so every caller
reports an unreadable file, invalid YAML and duplicate keys the same way. ``key_positions``
maps spec paths to lines and columns, which the error mapping uses to point at the mistake.
``spec_to_dict`` / ``spec_to_yaml`` write a spec back out in a form that loads back equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from vitzoo.errors import SpecError, SpecIssue

#: File names with these endings are spec files (anything else may be a checkpoint or preset).
SPEC_FILE_SUFFIXES = frozenset({".yaml", ".yml", ".json"})


def is_spec_file_name(source: str | Path) -> bool:
    """Whether ``source`` is named like a spec file (whether or not it exists)."""
    return Path(source).suffix in SPEC_FILE_SUFFIXES


Positions = dict[tuple[Any, ...], tuple[int, int]]


def key_positions(text: str | None) -> Positions:
    """Map every key path in a YAML document to its 1-based (line, column)."""
    if not text:
        return {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: Positions = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        out[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, key.value)
                walk(value, child)
                out[child] = (key.start_mark.line + 1, key.start_mark.column + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return out


def _duplicate_keys(node: yaml.Node, path: tuple[Any, ...] = ()) -> list[SpecIssue]:
    """YAML lets a later key silently win over an earlier one; a spec must say each once."""
    issues: list[SpecIssue] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            name = key.value
            if name in first:
                issues.append(
                    SpecIssue(
                        ".".join(str(p) for p in (*path, name)),
                        f"duplicate key {name!r} (first given on line {first[name]}); "
                        "give each key once",
                        line=key.start_mark.line + 1,
                        column=key.start_mark.column + 1,
                    )
                )
            else:
                first[name] = key.start_mark.line + 1
            issues += _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            issues += _duplicate_keys(item, (*path, i))
    return issues


def parse_yaml(text: str, file: str = "<spec>") -> Any:
    """``yaml.safe_load`` with invalid YAML and duplicate keys as a :class:`SpecError`."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecIssue("", f"invalid YAML: {problem}", file, line, col)]) from None
    duplicates = _duplicate_keys(root) if root is not None else []
    if duplicates:
        raise SpecError([SpecIssue(d.path, d.message, file, d.line, d.column) for d in duplicates])
    return data


def read_spec_file(path: str | Path) -> tuple[str, Any]:
    """The text of a spec file and its parsed data; an unreadable file is a :class:`SpecError`.

    The text comes back too because error messages need it for line numbers.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(
            [SpecIssue("", f"cannot read spec file: {exc.strerror}", str(path))]
        ) from None
    return text, parse_yaml(text, str(path))


def spec_to_dict(spec: BaseModel) -> dict[str, Any]:
    """A plain, JSON/YAML-safe mapping that validates back to an equal spec."""
    return spec.model_dump(mode="json", exclude_none=False)


def spec_to_yaml(spec: BaseModel) -> str:
    """The spec as a YAML document that loads back to an equal spec."""
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False)
