"""Pydantic's validation errors, as the lines a spec author can act on.

Every problem becomes ``file:line:col  model.patch.patch_size: message; allowed: ...``: the
spec path the user wrote (pydantic's union tags and validator names dropped), a sentence
without pydantic's jargon, what is allowed there (field names, registered ``type:`` tags, with
a "did you mean"), and the line and column found from the YAML text.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from vitzoo.config import SpecValueError
from vitzoo.errors import SpecError, SpecIssue
from vitzoo.spec.yaml_source import Positions, key_positions
from vitzoo.suggest import did_you_mean

#: (spec path, message, pydantic error type) per problem.
Found = list[tuple[tuple[Any, ...], str, str]]


def _clean_loc(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the steps pydantic inserts that the user never wrote.

    Union tags (``model.vit.patch`` -> ``model.patch``), validator names (``function-after``)
    and union branch labels under a scalar (``model.image_size.int``) name pydantic's
    internals, not the spec.
    """
    out: list[Any] = []
    cursor = data
    for step in loc:
        if isinstance(cursor, Mapping):
            if step in cursor:
                out.append(step)
                cursor = cursor[step]
                continue
            if cursor.get("type") == step or (
                isinstance(step, str) and step.startswith("function-")
            ):
                continue
            out.append(step)
            cursor = None
        elif isinstance(cursor, list | tuple) and isinstance(step, int) and step < len(cursor):
            out.append(step)
            cursor = cursor[step]
        elif isinstance(step, str) and (step.startswith("function-") or step in {"tagged-union"}):
            continue
        elif cursor is not None and isinstance(step, str):
            continue  # a union branch label under a value the user wrote
        else:
            out.append(step)
            cursor = None
    return tuple(out)


# -- what the schema allows at a spec path (for "one of: ..." and "did you mean") ---------------
def _members(annotation: Any) -> list[Any]:
    """The classes / types an annotation may hold (unions and Optional flattened)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _members(a)]
    return [annotation]


def _type_tag(cls: Any) -> str | None:
    field = getattr(cls, "model_fields", {}).get("type")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _annotation_at(root: type[BaseModel], data: Any, path: tuple[Any, ...]) -> Any:
    """The annotation of the field at ``path`` (a cleaned spec path), or None if unknown."""
    annotation: Any = root
    cursor = data
    for step in path:
        classes = [
            m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)
        ]
        if isinstance(step, int):
            inner = [a for m in _members(annotation) for a in get_args(m) if a is not Ellipsis]
            if not inner:
                return None
            annotation = inner[0] if len(inner) == 1 else Union[tuple(inner)]  # noqa: UP007
        else:
            if len(classes) > 1 and isinstance(cursor, Mapping):
                classes = [c for c in classes if _type_tag(c) == cursor.get("type")]
            if len(classes) != 1 or step not in classes[0].model_fields:
                return None
            annotation = classes[0].model_fields[step].annotation
        cursor = cursor.get(step) if isinstance(cursor, Mapping) else None
        if isinstance(step, int) and isinstance(cursor, list | tuple):
            cursor = None
    return annotation


def allowed_fields(root: type[BaseModel], data: Any, parent: tuple[Any, ...]) -> list[str]:
    """Field names of the config at ``parent`` (the mapping holding an unknown key)."""
    annotation = root if not parent else _annotation_at(root, data, parent)
    cursor: Any = data
    for step in parent:
        cursor = cursor.get(step) if isinstance(cursor, Mapping) else None
    classes = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(classes) > 1 and isinstance(cursor, Mapping):
        classes = [c for c in classes if _type_tag(c) == cursor.get("type")]
    return sorted(classes[0].model_fields) if len(classes) == 1 else []


def allowed_types(root: type[BaseModel], data: Any, path: tuple[Any, ...]) -> list[str]:
    """The registered ``type:`` tags allowed for the component at ``path``."""
    annotation = _annotation_at(root, data, path)
    return sorted(t for m in _members(annotation) if (t := _type_tag(m)) is not None)


def _plain(msg: str) -> str:
    """Pydantic's sentences, shortened to what the user has to change."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg.replace("Input should be", "must be").replace("input should be", "must be")


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _message(
    err: Mapping[str, Any],
    failed_plugins: list[str],
    *,
    root: type[BaseModel] | None = None,
    data: Any = None,
    loc: tuple[Any, ...] = (),
) -> str:
    kind = err["type"]
    msg = _plain(err["msg"])
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        allowed = allowed_types(root, data, loc) if root is not None else []
        msg = f"unknown type {tag!r}{did_you_mean(str(tag), allowed)}; allowed: {ctx.get('expected_tags', '')}"
    elif kind == "union_tag_not_found":
        allowed = allowed_types(root, data, loc) if root is not None else []
        where = ".".join(str(p) for p in loc) or "<root>"
        msg = f"{where}.type is missing; one of: {', '.join(allowed) or '(none registered)'}"
        given = err.get("input")
        if loc == ("model",) and isinstance(given, Mapping) and "preset" in given:
            msg += (
                "; `preset:` goes at the top level of the spec (preset: NAME, then model: with "
                "the fields to override)"
            )
    elif kind == "extra_forbidden":
        allowed = [f for f in allowed_fields(root, data, loc[:-1]) if f != "type"] if root else []
        hint = did_you_mean(str(loc[-1]) if loc else "", allowed)
        msg = f"unknown field{hint}; allowed here: {', '.join(allowed) or '(see `vitzoo schema`)'}"
    elif kind == "literal_error" and "expected" in ctx:
        msg = f"got {err['input']!r}; allowed: {ctx['expected']}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = "expected a mapping of this component's fields, e.g. {type: NAME, ...}"
    elif kind == "missing":
        msg = "required field is missing"
    if kind not in ("model_type", "dict_type", "missing", "extra_forbidden") and "input" in err:
        given = err.get("input")
        if isinstance(given, bool | int | float | str) and "got" not in msg:
            msg += f", got {given!r}"
        if kind in ("float_type", "int_type") and isinstance(given, str) and _numeric(given):
            msg += " (a string: write the number without quotes)"
    if kind in {"union_tag_invalid", "literal_error", "union_tag_not_found"} and failed_plugins:
        msg += f"; note: plugins that failed to load: {', '.join(failed_plugins)}"
    return msg


def issues_of(
    exc: ValidationError | SpecValueError,
    data: Any,
    *,
    failed_plugins: list[str],
    root: type[BaseModel] | None,
) -> Found:
    """(spec path, message, pydantic error type) per problem, union branch duplicates merged."""
    if isinstance(exc, SpecValueError):
        raw = [{"loc": exc.path, "msg": exc.message, "type": "spec", "input": None}]
    else:
        raw = exc.errors(include_url=False)
    found: dict[tuple[Any, ...], tuple[list[str], str]] = {}
    for err in raw:
        loc = _clean_loc(data, tuple(err["loc"]))
        error_obj = (err.get("ctx") or {}).get("error")
        if isinstance(error_obj, SpecValueError):
            loc = (*loc, *error_obj.path)
            message = error_obj.message
        else:
            message = _message(err, failed_plugins, root=root, data=data, loc=loc)
            if err["type"] in ("union_tag_invalid", "union_tag_not_found") and isinstance(
                err.get("input"), Mapping
            ):
                loc = (*loc, "type")  # point at the tag the user wrote, not the whole mapping
        messages, _ = found.setdefault(loc, ([], err["type"]))
        if message not in messages:
            messages.append(message)
    return [(loc, " or ".join(msgs), kind) for loc, (msgs, kind) in found.items()]


def to_issues(found: Found, positions: Positions, file: str) -> list[SpecIssue]:
    """Each problem at the line of its path (or of its nearest written parent)."""
    return [SpecIssue.at(loc, message, file, positions) for loc, message, _ in found]


def spec_error_from(
    exc: ValidationError | SpecValueError,
    data: Any,
    *,
    file: str = "<spec>",
    text: str | None = None,
    failed_plugins: list[str] | None = None,
    root: type[BaseModel] | None = None,
) -> SpecError:
    """The :class:`SpecError` for a validation failure of ``data`` (read from ``text``)."""
    found = issues_of(exc, data, failed_plugins=failed_plugins or [], root=root)
    return SpecError(to_issues(found, key_positions(text), file))
