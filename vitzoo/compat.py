"""Whole-spec compatibility: do the parts of a validated spec work together?

Each config checks its own fields, and an architecture checks its direct children
(:meth:`~vitzoo.config.ComponentConfig.check`). What no single config can see is whether a part
chosen here suits a model chosen there: a window attention (it folds tokens into a 2-D grid)
inside a video model, a grid attention under patch dropout, an attention without token-mask
support inside memory-vit, a distillation head after class-token pooling. Those rules are
written once, here, against the capability vocabulary every registration declares
(:mod:`vitzoo.capabilities`), and apply to every plugin's parts alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from vitzoo.capabilities import needs_of, offers_of
from vitzoo.config import ComponentConfig

#: How each vocabulary word reads in a message.
_WORDS = {
    "image": "image input (B, C, H, W)",
    "video": "video input (B, C, T, H, W)",
    "grid-2d": "a 2-D (h, w) token grid",
}


def _component_entries(registry: Any) -> dict[type, Any]:
    """Resolved config class -> registry entry, for every registered part."""
    from vitzoo.spec import resolved_config

    out: dict[type, Any] = {}
    for kind in ("patchifier", "posenc", "attention", "mlp", "block", "pooling", "head"):
        for name in registry.names(kind):
            entry = registry.get(kind, name)
            out[resolved_config(registry, kind, name)] = entry
            out.setdefault(entry.config, entry)
    return out


def components(registry: Any, config: BaseModel) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
    """(path inside the model config, config, entry) for every registered part in ``config``."""
    entries = _component_entries(registry)

    def walk(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
        if isinstance(value, ComponentConfig):
            entry = entries.get(type(value))
            if entry is not None and path:
                yield path, value, entry
            for name in type(value).model_fields:
                yield from walk(getattr(value, name), (*path, name))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from walk(item, (*path, i))

    yield from walk(config, ())


def _prefix_tokens(model: Any) -> int:
    return (
        int(bool(getattr(model, "class_token", False)))
        + int(bool(getattr(model, "distillation_token", False)))
        + int(getattr(model, "register_tokens", 0) or 0)
    )


def problems(registry: Any, spec: Any) -> list[tuple[tuple[Any, ...], str]]:
    """(spec path, plain sentence) for every pair of parts that cannot work together."""
    model = spec.model
    arch = registry.get("architecture", model.type)
    arch_needs, arch_offers = needs_of(arch), offers_of(arch)
    flat = arch_offers & {"tokens"} or hasattr(model, "class_token")
    prefix = _prefix_tokens(model)
    grid_changes = [
        reason
        for reason, present in (
            (
                f"patch_dropout: {getattr(model, 'patch_dropout', 0)}",
                getattr(model, "patch_dropout", 0) > 0,
            ),
            (f"model.type {model.type!r} drops or merges tokens", "drops-tokens" in arch_offers),
        )
        if present
    ]
    found: list[tuple[tuple[Any, ...], str]] = []
    pool_offers: frozenset[str] | None = None
    parts = list(components(registry, model))
    for path, _, entry in parts:
        if entry.kind == "pooling" and path == ("pool",):
            pool_offers = offers_of(entry)
    for path, _, entry in parts:
        where = ("model", *path, "type")
        what = f"{entry.kind} {entry.name!r}"
        needs = needs_of(entry)
        declared_context = arch_offers & {"image", "video"}
        for word in sorted(needs & {"image", "video", "grid-2d"}):
            if declared_context and word not in arch_offers:
                have = " and ".join(_WORDS[w] for w in sorted(arch_offers & set(_WORDS))) or "none"
                found.append(
                    (where, f"{what} needs {_WORDS[word]}; model.type {model.type!r} gives {have}")
                )
        top_level = len(path) == 1  # a part the flat token sequence reaches directly
        if "no-prefix-tokens" in needs and flat and top_level and prefix:
            found.append(
                (
                    where,
                    f"{what} cannot handle prefix tokens; this model has {prefix} (set "
                    "class_token: false, distillation_token: false, register_tokens: 0 and pool: "
                    "{type: mean})",
                )
            )
        if (
            "class-token" in needs
            and flat
            and top_level
            and not getattr(model, "class_token", True)
        ):
            found.append(
                (
                    where,
                    f"{what} reads the class token, but class_token is false; use pool: {{type: mean}}",
                )
            )
        if "fixed-grid" in needs and grid_changes and top_level:
            found.append(
                (
                    where,
                    f"{what} needs every patch token of the grid in order, but the grid changes "
                    f"inside this model ({'; '.join(grid_changes)})",
                )
            )
        if "token-mask" in arch_needs and entry.kind in ("attention", "block"):
            if "token-mask" not in offers_of(entry):
                found.append(
                    (
                        where,
                        f"model.type {model.type!r} passes a token mask to its blocks, and {what} "
                        "cannot take one; choose a part that supports masks (e.g. mhsa, pre-norm)",
                    )
                )
        if entry.kind == "head" and path == ("head",) and pool_offers:
            shape = {"pooled-vector": "(batch, dim)", "pooled-pair": "(batch, 2, dim)"}
            wanted = needs & set(shape)
            if wanted and not wanted & pool_offers:
                given = " or ".join(shape[w] for w in sorted(pool_offers & set(shape))) or "?"
                found.append(
                    (
                        where,
                        f"{what} needs pooled features of shape {shape[sorted(wanted)[0]]}, but "
                        f"pool {getattr(model.pool, 'type', '?')!r} gives {given}",
                    )
                )
    found += nested_problems(registry, spec)
    objective = getattr(spec, "objective", None)
    if objective is not None and ("objective", objective.type) in registry:
        entry = registry.get("objective", objective.type)
        for word in sorted(needs_of(entry) & {"image", "video", "tokens", "fixed-grid"}):
            if (
                word in ("image", "video")
                and arch_offers & {"image", "video"}
                and word not in arch_offers
            ):
                found.append(
                    (
                        ("objective", "type"),
                        f"objective {objective.type!r} needs {_WORDS[word]}; model.type "
                        f"{model.type!r} takes {' and '.join(_WORDS[w] for w in sorted(arch_offers & {'image', 'video'}))}",
                    )
                )
            if word == "fixed-grid" and grid_changes:
                found.append(
                    (
                        ("objective", "type"),
                        f"objective {objective.type!r} predicts one target per patch, but the grid "
                        f"changes inside this model ({'; '.join(grid_changes)})",
                    )
                )
    return found


def _configs(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, BaseModel):
        yield path, value
        for name in type(value).model_fields:
            yield from _configs(getattr(value, name), (*path, name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _configs(item, (*path, i))


def nested_problems(registry: Any, spec: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Specs inside the spec (a distillation teacher's) are validated too, at their own path.

    A config offers them through ``nested_specs() -> {field: (source, overrides)}``; a nested
    spec under a field called ``teacher`` must also predict the student's classes.
    """
    from types import SimpleNamespace

    from vitzoo.builder import resolve_spec
    from vitzoo.spec import SpecError

    found: list[tuple[tuple[Any, ...], str]] = []
    system = SimpleNamespace(registry=registry, failed=[])
    for section in ("objective",):
        for path, config in _configs(getattr(spec, section, None), (section,)):
            nested = getattr(config, "nested_specs", None)
            if not callable(nested):
                continue
            for field, (source, overrides) in nested().items():
                try:
                    inner = resolve_spec(source, overrides, system=system)  # type: ignore[arg-type]
                except SpecError as exc:
                    for issue in exc.issues:
                        sub = tuple(issue.path.split(".")) if issue.path else ()
                        where = (*path, field, *sub) if field == "spec" else (*path, field)
                        found.append((where, f"in this nested spec: {issue.message}"))
                    continue
                student = getattr(spec.model, "num_classes", None)
                teacher = getattr(inner.model, "num_classes", None)
                if (
                    path[-1:] == ("teacher",)
                    and None not in (student, teacher)
                    and student != teacher
                ):
                    found.append(
                        (
                            (*path, field),
                            f"the teacher predicts {teacher} classes and the student "
                            f"{student}; they must agree (set the teacher's num_classes, e.g. "
                            f"overrides: {{num_classes: {student}}})",
                        )
                    )
    return found


def check_spec_compatibility(
    registry: Any,
    spec: Any,
    *,
    data: Any = None,
    file: str = "<spec>",
    positions: Mapping[tuple[Any, ...], tuple[int, int]] | None = None,
) -> None:
    """Raise one :class:`~vitzoo.spec.SpecError` listing every incompatible pair of parts."""
    from vitzoo.spec import SpecError, SpecIssue

    found = problems(registry, spec)
    if not found:
        return
    raise SpecError([SpecIssue.at(path, message, file, positions) for path, message in found])
