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


def resolver(registry: Registry) -> _Resolver:
    cached = getattr(registry, "_vitzoo_resolver", None)
    if cached is None:
        cached = _Resolver(registry)
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
            f"unknown preset {name!r}; registered presets: {', '.join(registry.names('preset'))}",
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
    if cached is not None:
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
    registry._vitzoo_spec_model = model  # type: ignore[attr-defined]
    return model


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
    """Drop the union-tag steps pydantic inserts (``model.vit.patch`` -> ``model.patch``)."""
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
        else:
            out.append(step)
            cursor = None
    return tuple(out)


def _message(err: Mapping[str, Any], failed_plugins: list[str]) -> str:
    msg = err["msg"]
    if err["type"] == "value_error" and msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        msg = f"unknown type {ctx.get('tag')!r}; allowed: {ctx.get('expected_tags', '')}"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling; `vitzoo schema` lists the allowed fields)"
    elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
        msg = f"got {err['input']!r}; allowed: {err['ctx']['expected']}"
    if err["type"] in {"union_tag_invalid", "literal_error"} and failed_plugins:
        msg += f"; note: plugins that failed to load: {', '.join(failed_plugins)}"
    return msg


def spec_error_from(
    exc: ValidationError | SpecValueError,
    data: Any,
    *,
    file: str = "<spec>",
    text: str | None = None,
    failed_plugins: list[str] | None = None,
) -> SpecError:
    positions = _positions(text)
    issues: list[SpecIssue] = []
    if isinstance(exc, SpecValueError):
        raw = [{"loc": exc.path, "msg": exc.message, "type": "spec", "input": None}]
    else:
        raw = exc.errors(include_url=False)
    for err in raw:
        loc = _clean_loc(data, tuple(err["loc"]))
        error_obj = err.get("ctx", {}).get("error")
        if isinstance(error_obj, SpecValueError):
            loc = (*loc, *error_obj.path)
            message = error_obj.message
        else:
            message = _message(err, failed_plugins or [])
            if err["type"] == "union_tag_invalid" and isinstance(err.get("input"), Mapping):
                loc = (*loc, "type")  # point at the tag the user wrote, not the whole mapping
        probe = loc
        while probe and probe not in positions:
            probe = probe[:-1]
        line, col = positions.get(probe, (None, None))
        issues.append(SpecIssue(".".join(str(p) for p in loc), message, file, line, col))
    return SpecError(issues)


# --------------------------------------------------------------------------------------------
# Loading and dumping
# --------------------------------------------------------------------------------------------
def validate_spec(
    registry: Registry,
    data: Any,
    *,
    file: str = "<spec>",
    text: str | None = None,
    failed_plugins: list[str] | None = None,
) -> SpecBase:
    if not isinstance(data, Mapping):
        raise SpecError(
            [SpecIssue("", "a spec must be a mapping with a 'model' section", file, 1, 1)]
        )
    model = spec_model(registry)
    try:
        data = expand_preset(registry, data)  # here too, so error paths follow the merged data
        return model.model_validate(data)
    except (ValidationError, SpecValueError) as exc:
        raise spec_error_from(
            exc, data, file=file, text=text, failed_plugins=failed_plugins
        ) from None


def parse_yaml(text: str, file: str = "<spec>") -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecIssue("", f"invalid YAML: {problem}", file, line, col)]) from None


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
    "spec_model",
    "spec_to_dict",
    "spec_to_yaml",
    "validate_spec",
]
