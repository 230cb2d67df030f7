"""Specs: YAML on disk, pydantic in memory, validated against whatever is registered.

``spec_model(registry)`` builds the root :class:`Spec` class for a registry: ``model`` is a
discriminated union of every registered architecture config, ``objective`` one of every objective,
and every ``ComponentSpec(kind)`` field inside them becomes a union of that kind's configs.
``load_spec`` reads YAML (``safe_load``), merges a ``preset:`` base, validates, and turns every
pydantic error into ``file:line:col  model.patch.patch_size: message`` lines.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from vitzoo.config import ComponentConfig, ComponentKind, SpecValueError, check_child
from vitzoo.registry import Registry
from vitzoo.suggest import did_you_mean
from vitzoo.training.config import DataConfig, TrainConfig
from vitzoo.weights.section import WeightsSection


# --------------------------------------------------------------------------------------------
# Resolving ComponentSpec placeholders into discriminated unions
# --------------------------------------------------------------------------------------------
class _Resolver:
    """Rebuilds config classes with their component fields bound to the registered unions."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._classes: dict[type, type] = {}
        self._unions: dict[str, Any] = {}

    def union(self, kind: str) -> Any:
        if kind not in self._unions:
            members = [
                self.config(self.registry.get(kind, n).config) for n in self.registry.names(kind)
            ]
            if not members:
                raise LookupError(f"nothing is registered for kind {kind!r}")
            if len(members) == 1:
                self._unions[kind] = members[0]
            else:
                self._unions[kind] = Annotated[Union[tuple(members)], Field(discriminator="type")]  # noqa: UP007
        return self._unions[kind]

    def config(self, cls: type[ComponentConfig]) -> type[ComponentConfig]:
        if cls in self._classes:
            return self._classes[cls]
        self._classes[cls] = cls  # provisional: guards against self-reference
        changed: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            kinds = [m for m in info.metadata if isinstance(m, ComponentKind)]
            annotation = self.union(kinds[0].kind) if kinds else self.annotation(info.annotation)
            if kinds or annotation is not info.annotation:
                new_info = copy.copy(info)
                new_info.metadata = [m for m in info.metadata if not isinstance(m, ComponentKind)]
                if get_origin(annotation) is Annotated:
                    # An explicit FieldInfo wins over Annotated metadata in create_model, so the
                    # union's discriminator must move onto the field itself.
                    annotation, union_info = get_args(annotation)
                    new_info.discriminator = union_info.discriminator
                changed[name] = (annotation, new_info)
        if changed:
            resolved = create_model(
                cls.__name__,
                __base__=cls,
                __module__=cls.__module__,
                __doc__=cls.__doc__,
                **changed,
            )
            self._classes[cls] = resolved
        return self._classes[cls]

    def annotation(self, tp: Any) -> Any:
        origin, args = get_origin(tp), get_args(tp)
        if origin is Annotated:
            base, *meta = args
            kinds = [m for m in meta if isinstance(m, ComponentKind)]
            if kinds:
                return self.union(kinds[0].kind)
            new_base = self.annotation(base)
            return tp if new_base is base else Annotated[(new_base, *meta)]
        if origin in (Union, types.UnionType):
            new_args = tuple(self.annotation(a) for a in args)
            return tp if new_args == args else Union[new_args]  # noqa: UP007
        if origin in (list, tuple, dict) and args:
            new_args = tuple(a if a is Ellipsis else self.annotation(a) for a in args)
            return tp if new_args == args else origin[new_args]
        if isinstance(tp, type) and issubclass(tp, ComponentConfig):
            return self.config(tp)
        return tp


def _registry_version(registry: Registry) -> Any:
    """Changes whenever something is registered or rolled back (caches compare it)."""
    return getattr(registry, "version", None)


def resolver(registry: Registry) -> _Resolver:
    cached = getattr(registry, "_vitzoo_resolver", None)
    version = _registry_version(registry)
    if cached is None or getattr(cached, "version", None) != version:
        # a plugin registered after the first validation must be seen: rebuild the unions
        cached = _Resolver(registry)
        cached.version = version  # type: ignore[attr-defined]
        registry._vitzoo_resolver = cached  # type: ignore[attr-defined]
    return cached


def resolved_config(registry: Registry, kind: str, name: str) -> type[ComponentConfig]:
    """The config class of a registered entry with its component fields bound to unions."""
    return resolver(registry).config(registry.get(kind, name).config)


# --------------------------------------------------------------------------------------------
# Presets and overrides
# --------------------------------------------------------------------------------------------
def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into ``base``; a component whose ``type`` changes is replaced whole."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = out.get(key)
        same_type = not (
            isinstance(value, Mapping)
            and isinstance(current, Mapping)
            and "type" in value
            and value.get("type") != current.get("type")
        )
        if isinstance(value, Mapping) and isinstance(current, Mapping) and same_type:
            out[key] = deep_merge(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_path(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c = value`` set (creating mappings on the way)."""
    keys = dotted.split(".")
    override: dict[str, Any] = {}
    cursor = override
    for key in keys[:-1]:
        cursor = cursor.setdefault(key, {})
    cursor[keys[-1]] = value
    return deep_merge(data, override)


def expand_preset(registry: Registry, data: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the spec's ``preset:`` (if any) under its own fields."""
    data = dict(data)
    name = data.get("preset")
    if name is None:
        return data
    if not isinstance(name, str) or ("preset", name) not in registry:
        raise SpecValueError(
            ("preset",),
            f"unknown preset {name!r}{did_you_mean(str(name), registry.names('preset'))}; "
            f"registered presets: {', '.join(registry.names('preset'))}",
        )
    base = dict(registry.get("preset", name).spec)
    return deep_merge(base, data)


# --------------------------------------------------------------------------------------------
# The root spec
# --------------------------------------------------------------------------------------------
class SpecBase(BaseModel):
    """Root of a spec file. ``model`` is required; the rest is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def spec_model(registry: Registry) -> type[SpecBase]:
    """The root spec class for ``registry`` (built once per registry)."""
    cached = getattr(registry, "_vitzoo_spec_model", None)
    version = _registry_version(registry)
    if cached is not None and getattr(cached, "_vitzoo_registry_version", None) == version:
        return cached
    res = resolver(registry)
    fields: dict[str, Any] = {
        "preset": (
            str | None,
            Field(default=None, description="Start from this registered preset."),
        ),
        "model": (res.union("architecture"), Field(description="The architecture and its parts.")),
    }
    if registry.names("objective"):
        fields["objective"] = (
            res.union("objective") | None,  # type: ignore[operator]
            Field(
                default=None, description="Training objective (see `vitzoo list --kind objective`)."
            ),
        )
    fields["train"] = (
        TrainConfig,
        Field(default_factory=TrainConfig, description="Optimisation settings (`vitzoo train`)."),
    )
    fields["data"] = (
        DataConfig,
        Field(default_factory=DataConfig, description="Dataset layout and augmentation."),
    )

    fields["weights"] = (
        WeightsSection | None,
        Field(
            default=None,
            description="Start from pretrained weights (vitzoo/timm/Hugging Face source).",
        ),
    )

    def _expand(cls: type, data: Any) -> Any:
        if isinstance(data, Mapping):
            return expand_preset(registry, data)
        return data

    def _check_objective(self: Any) -> Any:
        """An objective may need a model capability (MAE needs flat tokens): reject bad pairs."""
        objective = getattr(self, "objective", None)
        if objective is not None:
            entry = registry.get("architecture", self.model.type)
            check_child(
                objective, "objective", architecture=entry.name, architecture_tags=entry.tags
            )
        return self

    validators = {
        "expand_preset": model_validator(mode="before")(classmethod(_expand)),
        "check_objective": model_validator(mode="after")(_check_objective),
    }
    model = create_model("Spec", __base__=SpecBase, __validators__=validators, **fields)
    model._vitzoo_registry_version = version  # type: ignore[attr-defined]
    registry._vitzoo_spec_model = model  # type: ignore[attr-defined]
    return model


def spec_json_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a spec file, accepting what :func:`validate_spec` accepts.

    Pydantic's schema of the root model requires ``model`` with a ``type``; a spec that starts
    from a ``preset:`` needs neither (the preset supplies them, ``model:`` only overrides), so
    the schema says: without ``preset``, ``model`` is required and is one registered
    architecture; with it, ``model`` is any mapping of overrides.
    """
    schema = spec_model(registry).model_json_schema()
    props = schema["properties"]
    union = {k: v for k, v in props["model"].items() if k != "description"}
    props["model"] = {
        "description": "The architecture and its parts (with `preset:`, only what changes).",
        "anyOf": [union, {"type": "object"}],
    }
    presets = registry.names("preset")
    if presets:
        props["preset"] = {**props["preset"], "examples": presets}
    schema["required"] = [r for r in schema.get("required", []) if r != "model"]
    schema["allOf"] = [
        {
            "if": {"not": {"required": ["preset"]}},
            "then": {"required": ["model"], "properties": {"model": union}},
        },
        {
            "if": {"required": ["preset"], "properties": {"preset": {"type": "null"}}},
            "then": {"required": ["model"], "properties": {"model": union}},
        },
    ]
    return schema


# --------------------------------------------------------------------------------------------
# Errors with file:line
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpecIssue:
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


def _positions(text: str | None) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Map every key path in a YAML document to its 1-based (line, column)."""
    if not text:
        return {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: dict[tuple[Any, ...], tuple[int, int]] = {}

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


def _allowed_fields(root: type[BaseModel], data: Any, parent: tuple[Any, ...]) -> list[str]:
    """Field names of the config at ``parent`` (the mapping holding an unknown key)."""
    annotation = root if not parent else _annotation_at(root, data, parent)
    cursor: Any = data
    for step in parent:
        cursor = cursor.get(step) if isinstance(cursor, Mapping) else None
    classes = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(classes) > 1 and isinstance(cursor, Mapping):
        classes = [c for c in classes if _type_tag(c) == cursor.get("type")]
    return sorted(classes[0].model_fields) if len(classes) == 1 else []


def _allowed_types(root: type[BaseModel], data: Any, path: tuple[Any, ...]) -> list[str]:
    """The registered ``type:`` tags allowed for the component at ``path``."""
    annotation = _annotation_at(root, data, path)
    return sorted(t for m in _members(annotation) if (t := _type_tag(m)) is not None)


def _plain(msg: str) -> str:
    """Pydantic's sentences, shortened to what the user has to change."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg.replace("Input should be", "must be").replace("input should be", "must be")


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
        allowed = _allowed_types(root, data, loc) if root is not None else []
        msg = f"unknown type {tag!r}{did_you_mean(str(tag), allowed)}; allowed: {ctx.get('expected_tags', '')}"
    elif kind == "union_tag_not_found":
        allowed = _allowed_types(root, data, loc) if root is not None else []
        where = ".".join(str(p) for p in loc) or "<root>"
        msg = f"{where}.type is missing; one of: {', '.join(allowed) or '(none registered)'}"
        given = err.get("input")
        if loc == ("model",) and isinstance(given, Mapping) and "preset" in given:
            msg += (
                "; `preset:` goes at the top level of the spec (preset: NAME, then model: with "
                "the fields to override)"
            )
    elif kind == "extra_forbidden":
        allowed = [f for f in _allowed_fields(root, data, loc[:-1]) if f != "type"] if root else []
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
    if kind in {"union_tag_invalid", "literal_error", "union_tag_not_found"} and failed_plugins:
        msg += f"; note: plugins that failed to load: {', '.join(failed_plugins)}"
    return msg


def _issues_of(
    exc: ValidationError | SpecValueError,
    data: Any,
    *,
    file: str,
    positions: Mapping[tuple[Any, ...], tuple[int, int]],
    failed_plugins: list[str],
    root: type[BaseModel] | None,
) -> list[tuple[tuple[Any, ...], str, str]]:
    """(spec path, message, pydantic error type) per problem, branch duplicates merged."""
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


def _to_issues(
    found: list[tuple[tuple[Any, ...], str, str]],
    positions: Mapping[tuple[Any, ...], tuple[int, int]],
    file: str,
) -> list[SpecIssue]:
    issues = []
    for loc, message, _ in found:
        probe = loc
        while probe and probe not in positions:
            probe = probe[:-1]
        line, col = positions.get(probe, (None, None))
        issues.append(SpecIssue(".".join(str(p) for p in loc), message, file, line, col))
    return issues


def spec_error_from(
    exc: ValidationError | SpecValueError,
    data: Any,
    *,
    file: str = "<spec>",
    text: str | None = None,
    failed_plugins: list[str] | None = None,
    root: type[BaseModel] | None = None,
) -> SpecError:
    positions = _positions(text)
    found = _issues_of(
        exc, data, file=file, positions=positions, failed_plugins=failed_plugins or [], root=root
    )
    return SpecError(_to_issues(found, positions, file))


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


#: How many times validation is retried with the faulty fields left out (see ``validate_spec``).
_REPAIR_ROUNDS = 3

Found = list[tuple[tuple[Any, ...], str, str]]


def _issues_behind(
    model: type[BaseModel],
    registry: Registry,
    data: Any,
    found: Found,
    positions: Mapping[tuple[Any, ...], tuple[int, int]],
    failed: list[str],
    file: str,
) -> Found:
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
            _validate_once(model, registry, attempt)
            break
        except (ValidationError, SpecValueError) as again:
            more = _issues_of(
                again, attempt, file=file, positions=positions, failed_plugins=failed, root=model
            )
        # a field left out may be required: that is not a new problem
        latest = [f for f in more if f[0] not in seen and f[2] != "missing"]
        if not latest:
            break
        seen |= {loc for loc, _, _ in latest}
        extra += latest
    return extra


# --------------------------------------------------------------------------------------------
# Loading and dumping
# --------------------------------------------------------------------------------------------
def _validate_once(model: type[BaseModel], registry: Registry, data: Any) -> Any:
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


def _is_plain_preset(data: Mapping[str, Any]) -> bool:
    """A registered preset without model changes: the preset tests build and run those."""
    return "preset" in data and "model" not in data


def validate_spec(
    registry: Registry,
    data: Any,
    *,
    file: str = "<spec>",
    text: str | None = None,
    failed_plugins: list[str] | None = None,
    trial: bool = True,
) -> SpecBase:
    """Validate ``data`` against everything registered; every problem is reported at once.

    Pydantic skips a config's cross-field rules when one of its fields is already wrong, so a
    typo would hide an indivisible patch size. After a failed validation the faulty fields are
    left out (their defaults stand in) and validation runs again, up to ``_REPAIR_ROUNDS`` times,
    collecting the new problems. A spec that validates is then checked as a whole: parts that
    cannot work together (:mod:`vitzoo.compat`) and sizes past the budget with a trial build on
    the meta device (:mod:`vitzoo.budget`; ``trial=False`` skips that build).
    """
    if not isinstance(data, Mapping):
        raise SpecError(
            [SpecIssue("", "a spec must be a mapping with a 'model' section", file, 1, 1)]
        )
    model = spec_model(registry)
    positions = _positions(text)
    failed = failed_plugins or []
    given = data
    try:
        data = expand_preset(registry, data)  # here too, so error paths follow the merged data
        spec = _validate_once(model, registry, data)
    except (ValidationError, SpecValueError) as exc:
        found = _issues_of(
            exc, data, file=file, positions=positions, failed_plugins=failed, root=model
        )
        found += _issues_behind(model, registry, data, found, positions, failed, file)
        raise SpecError(_to_issues(found, positions, file)) from None
    if trial and not _is_plain_preset(given):
        from vitzoo.compat import check_spec_compatibility

        check_spec_compatibility(registry, spec, data=data, file=file, positions=positions)
        from vitzoo.budget import check_budget

        check_budget(registry, spec, file=file, positions=positions)
    return spec


def _duplicate_keys(node: yaml.Node, path: tuple[Any, ...] = ()) -> list[SpecIssue]:
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


def load_spec_file(registry: Registry, path: str | Path, **kwargs: Any) -> SpecBase:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(
            [SpecIssue("", f"cannot read spec file: {exc.strerror}", str(path))]
        ) from None
    data = parse_yaml(text, str(path))
    return validate_spec(registry, data, file=str(path), text=text, **kwargs)


def spec_to_dict(spec: BaseModel) -> dict[str, Any]:
    """A plain, JSON/YAML-safe mapping that validates back to an equal spec."""
    return spec.model_dump(mode="json", exclude_none=False)


def spec_to_yaml(spec: BaseModel) -> str:
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False)


__all__ = [
    "Literal",
    "SpecBase",
    "SpecError",
    "SpecIssue",
    "deep_merge",
    "expand_preset",
    "load_spec_file",
    "parse_yaml",
    "resolved_config",
    "set_path",
    "spec_json_schema",
    "spec_model",
    "spec_to_dict",
    "spec_to_yaml",
    "validate_spec",
]
