"""Validating a spec against everything registered, reporting every problem at once.

The entry points: :func:`validate_spec` (a mapping), :func:`load_spec_text` (YAML text) and
:func:`load_spec_file` (a file). The root class comes from :mod:`vitzoo.spec.model`, the error
lines from :mod:`vitzoo.spec.errors`; what is added here is the repair loop that finds the
problems pydantic hides behind a first one. Validation checks fields and each config's own
cross-field rules; it builds nothing. Whether the parts of a valid spec work together, and
whether it builds and runs, is decided above this layer (:func:`vitzoo.builder.resolve`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from vitzoo.config import SpecValueError
from vitzoo.errors import SpecError, SpecIssue
from vitzoo.registry import Registry
from vitzoo.spec.errors import Found, issues_of, to_issues
from vitzoo.spec.model import SpecBase, spec_model
from vitzoo.spec.overrides import expand_preset
from vitzoo.spec.yaml_source import key_positions, parse_yaml, read_spec_file

#: How many times validation is retried with the faulty fields left out (see ``validate_spec``).
_REPAIR_ROUNDS = 3


def _without(data: Any, path: tuple[Any, ...]) -> bool:
    """Remove the value at ``path`` from nested mappings in place; False if it is not there."""
    cursor = data
    for step in path[:-1]:
        if isinstance(cursor, Mapping) and step in cursor:
            cursor = cursor[step]
        elif isinstance(cursor, list) and isinstance(step, int) and step < len(cursor):
            cursor = cursor[step]
        else:
            return False
    if isinstance(cursor, dict) and path and path[-1] in cursor:
        del cursor[path[-1]]
        return True
    return False


def _validate_once(model: type[BaseModel], data: Any) -> Any:
    """One validation; a validation rule that crashes (a plugin bug) becomes a spec problem."""
    try:
        return model.model_validate(data)
    except (ValidationError, SpecValueError):
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's rule must not crash the caller
        where = data.get("model", {}).get("type") if isinstance(data, Mapping) else None
        raise SpecValueError(
            ("model",),
            f"a validation rule of model.type {where!r} failed unexpectedly "
            f"({type(exc).__name__}: {exc}); check this section's values",
        ) from None


def _issues_behind(model: type[BaseModel], data: Any, found: Found, failed: list[str]) -> Found:
    """Problems hidden behind ``found``: validate again with the faulty fields left out."""
    attempt: Any = copy.deepcopy(dict(data))
    seen = {loc for loc, _, _ in found}
    extra: Found = []
    latest = found
    for _ in range(_REPAIR_ROUNDS):
        removed = False
        for loc, _, kind in latest:
            unknown_tag = bool(loc) and loc[-1] == "type" and kind.startswith("union")
            target = loc[:-1] if unknown_tag else loc
            removed = (bool(target) and _without(attempt, target)) or removed
        if not removed:
            break
        try:
            _validate_once(model, attempt)
            break
        except (ValidationError, SpecValueError) as again:
            more = issues_of(again, attempt, failed_plugins=failed, root=model)
        # a field left out may be required: that is not a new problem
        latest = [f for f in more if f[0] not in seen and f[2] != "missing"]
        if not latest:
            break
        seen |= {loc for loc, _, _ in latest}
        extra += latest
    return extra


def validate_spec(
    registry: Registry,
    data: Any,
    *,
    file: str = "<spec>",
    text: str | None = None,
    failed_plugins: list[str] | None = None,
) -> SpecBase:
    """Validate ``data`` against everything registered; every problem is reported at once.

    Pydantic skips a config's cross-field rules when one of its fields is already wrong, so a
    typo would hide an indivisible patch size. After a failed validation the faulty fields are
    left out (their defaults stand in) and validation runs again, up to ``_REPAIR_ROUNDS`` times,
    collecting the new problems.
    """
    if not isinstance(data, Mapping):
        raise SpecError(
            [SpecIssue("", "a spec must be a mapping with a 'model' section", file, 1, 1)]
        )
    model = spec_model(registry)
    positions = key_positions(text)
    failed = failed_plugins or []
    written = data
    try:
        data = expand_preset(registry, data)  # here too, so error paths follow the merged data
        spec = _validate_once(model, data)
    except (ValidationError, SpecValueError) as exc:
        found = issues_of(exc, data, failed_plugins=failed, root=model)
        behind = _issues_behind(model, data, found, failed)
        if any(loc == ("preset",) for loc, _, _ in found):
            # the unknown preset would have given the missing fields: not problems of their own
            behind = [f for f in behind if f[2] not in ("missing", "union_tag_not_found")]
        issues = to_issues(found + behind, positions, file)
        raise SpecError(blame_preset(issues, written, registry)) from None
    return spec


def _is_written(data: Any, path: str) -> bool:
    """Whether the spec path ``a.b.0.c`` is written in ``data`` (the spec as the user gave it)."""
    cursor = data
    for step in path.split(".") if path else ():
        if isinstance(cursor, Mapping) and step in cursor:
            cursor = cursor[step]
        elif isinstance(cursor, list) and step.isdigit() and int(step) < len(cursor):
            cursor = cursor[int(step)]
        else:
            return False
    return True


def blame_preset(issues: list[SpecIssue], written: Any, registry: Registry) -> list[SpecIssue]:
    """A problem in a field the spec took from its ``preset:`` is reported at that preset
    (``preset 'my-vit'  model.num_heads: ...``), not at a line of a file that does not hold it:
    a third party's broken preset must name itself. The builder applies it to the whole-spec
    rules' and the trial build's problems too."""
    name = written.get("preset") if isinstance(written, Mapping) else None
    if not isinstance(name, str) or ("preset", name) not in registry:
        return issues
    where = f"preset {registry.canonical('preset', name)!r}"
    return [
        SpecIssue(i.path, i.message, where) if i.path and not _is_written(written, i.path) else i
        for i in issues
    ]


def load_spec_text(
    registry: Registry, text: str, *, file: str = "<spec>", **kwargs: Any
) -> SpecBase:
    """Parse and validate a YAML spec (a file's text, or one stored in an exported model)."""
    return validate_spec(registry, parse_yaml(text, file), file=file, text=text, **kwargs)


def load_spec_file(registry: Registry, path: str | Path, **kwargs: Any) -> SpecBase:
    """Read, parse and validate a spec file; every problem is a :class:`SpecError`."""
    text, data = read_spec_file(path)
    return validate_spec(registry, data, file=str(path), text=text, **kwargs)
