"""Spec text: reading a file, parsing it safely, knowing where each key was written, writing.

The one place a spec file is opened and parsed (:func:`read_spec_file`), so every caller
reports an unreadable file, invalid YAML and duplicate keys the same way. ``key_positions``
maps spec paths to lines and columns, which the error mapping uses to point at the mistake.
``spec_to_dict`` / ``spec_to_yaml`` write a spec back out in a form that loads back equal.
"""

from __future__ import annotations

import re
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


class SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``3e-4``, ``1E5`` and ``1.0e5`` as floats.

    PyYAML implements YAML 1.1, whose float needs a dot and a signed exponent (``3.0e-4``), so
    ``lr: 3e-4`` -- how every ML user writes a learning rate -- arrived as the string ``'3e-4'``
    and the strict number fields refused it. YAML 1.2 (and JSON) read it as a number; so does
    this loader, for every spec vitzoo reads: files, ``--set`` values, stored specs. The
    resolver is tried after the built-in ones, so nothing PyYAML already reads changes.
    """


#: YAML 1.2's float forms that YAML 1.1 reads as strings: an exponent without a dot or sign.
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+.0123456789"))


def load_yaml(text: str) -> Any:
    """Parse YAML text the way every spec is read (:class:`SpecLoader`); errors propagate."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader


def key_positions(text: str | None) -> Positions:
    """Map every key path in a YAML document to its 1-based (line, column)."""
    if not text:
        return {}
    try:
        root = yaml.compose(text, Loader=SpecLoader)
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
    """:func:`load_yaml` with invalid YAML and duplicate keys as a :class:`SpecError`."""
    try:
        data = load_yaml(text)
        root = yaml.compose(text, Loader=SpecLoader)
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
    except UnicodeDecodeError:
        raise SpecError(
            [
                SpecIssue(
                    "",
                    "not a spec (YAML text) but a binary file; weights? Start from them with "
                    f"`train.init_from: {path}` (or pass the file itself where a checkpoint "
                    "goes), see what it holds with `vitzoo info`",
                    str(path),
                )
            ]
        ) from None
    return text, parse_yaml(text, str(path))


def spec_to_dict(spec: BaseModel) -> dict[str, Any]:
    """A plain, JSON/YAML-safe mapping that validates back to an equal spec."""
    return spec.model_dump(mode="json", exclude_none=False)


def spec_to_yaml(spec: BaseModel) -> str:
    """The spec as a YAML document that loads back to an equal spec."""
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False)
