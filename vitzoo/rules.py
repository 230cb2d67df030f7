"""Whole-spec rules: do the parts of a field-valid spec work together?

Each config checks its own fields, and an architecture checks its direct children
(:meth:`~vitzoo.config.ComponentConfig.check`). What no single config can see is whether a part
chosen here suits a model chosen there: a window attention (it folds tokens into a 2-D grid)
inside a video model, a grid attention under patch dropout, an attention without token-mask
support inside memory-vit, a distillation head after class-token pooling, a masked-image
objective on a model without flat tokens. These rules are written once, here, against the
capability words every registration declares (:mod:`vitzoo.capabilities`, whose
:func:`~vitzoo.capabilities.unmet` is the one checker), and apply to every plugin's parts alike.
A spec nested in the spec (a distillation teacher's) is validated and checked at its own path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from vitzoo.capabilities import needs_of, offers_of, phrase, unmet
from vitzoo.config import ComponentConfig
from vitzoo.errors import SpecError, SpecIssue
from vitzoo.registry import COMPONENT_KINDS, Registry
from vitzoo.spec import resolved_config
from vitzoo.spec.sources import validate_source

Problem = tuple[tuple[Any, ...], str]

#: Pooled shapes, as a head that needs them reads in a message.
POOLED_SHAPES = {"pooled-vector": "(batch, dim)", "pooled-pair": "(batch, 2, dim)"}


def _component_entries(registry: Registry) -> dict[type, Any]:
    """Resolved config class -> registry entry, for every registered part."""
    out: dict[type, Any] = {}
    for kind in COMPONENT_KINDS:
        for name in registry.names(kind):
            entry = registry.get(kind, name)
            out[resolved_config(registry, kind, name)] = entry
            out.setdefault(entry.config, entry)
    return out


def components(registry: Registry, config: BaseModel) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
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


@dataclass(frozen=True)
class Host:
    """What the model of a spec offers the parts inside it (read once per spec)."""

    type: str
    offers: frozenset[str]
    needs: frozenset[str]
    #: The parts see one flat token sequence (a ViT), so prefix tokens reach them.
    flat: bool
    prefix_tokens: int
    class_token: bool
    #: Why the token grid changes inside the model (patch dropout, token merging), if it does.
    grid_changes: tuple[str, ...]
    #: Several images share one sequence (a packed model with ``packing: greedy``), so attention
    #: takes a block-diagonal mask.
    packs_images: bool = False

    @classmethod
    def of(cls, registry: Registry, model: Any) -> Host:
        arch = registry.get("architecture", model.type)
        offers = offers_of(arch)
        changes = []
        dropout = getattr(model, "patch_dropout", 0)
        if dropout > 0:
            changes.append(f"patch_dropout: {dropout}")
        if "drops-tokens" in offers:
            changes.append(f"model.type {model.type!r} drops or merges tokens")
        prefix = (
            int(bool(getattr(model, "class_token", False)))
            + int(bool(getattr(model, "distillation_token", False)))
            + int(getattr(model, "register_tokens", 0) or 0)
        )
        return cls(
            type=model.type,
            offers=offers | ({"drops-tokens"} if changes else set()),
            needs=needs_of(arch),
            flat="tokens" in offers or hasattr(model, "class_token"),
            prefix_tokens=prefix,
            class_token=bool(getattr(model, "class_token", True)),
            grid_changes=tuple(changes),
            packs_images=getattr(model, "packing", None) == "greedy",
        )

    def gives(self) -> str:
        words = [phrase(w) for w in sorted(self.offers & {"image", "video"})]
        return " and ".join(words) or "none"

    def under_objective(self, registry: Registry, objective: Any) -> Host:
        """What the model's parts see when the objective runs them on a subset of the patch
        tokens (MAE's encoder, whose registration offers ``drops-tokens``): a changing grid,
        which parts that need every token cannot take."""
        if objective is None or ("objective", objective.type) not in registry:
            return self
        if "drops-tokens" not in offers_of(registry.get("objective", objective.type)):
            return self
        change = f"objective {objective.type!r} encodes a subset of the patch tokens"
        return dataclasses.replace(
            self, offers=self.offers | {"drops-tokens"}, grid_changes=(*self.grid_changes, change)
        )


def _unmet_problems(host: Host, what: str, needs: frozenset[str]) -> list[str]:
    """Sentences for the needs of ``what`` that the host leaves open."""
    out = []
    for word in unmet(needs, host.offers):
        if word == "fixed-grid":
            out.append(
                f"{what} needs {phrase(word)}, but the grid changes inside this model "
                f"({'; '.join(host.grid_changes)})"
            )
        elif word in ("image", "video", "grid-2d"):
            out.append(
                f"{what} needs {phrase(word)}; model.type {host.type!r} gives {host.gives()}"
            )
        else:
            out.append(f"{what} needs {phrase(word)}; model.type {host.type!r} is not one")
    return out


def _token_problems(host: Host, what: str, needs: frozenset[str]) -> list[str]:
    """Prefix tokens and the class token, for a part the flat token sequence reaches."""
    out = []
    if "no-prefix-tokens" in needs and host.prefix_tokens:
        out.append(
            f"{what} cannot handle prefix tokens; this model has {host.prefix_tokens} (set "
            "class_token: false, distillation_token: false, register_tokens: 0 and pool: "
            "{type: mean})"
        )
    if "class-token" in needs and not host.class_token:
        out.append(
            f"{what} reads the class token, but class_token is false; use pool: {{type: mean}}"
        )
    return out


def _part_problems(host: Host, path: tuple[Any, ...], entry: Any, pool: Any) -> list[str]:
    """Everything one registered part of the model needs and the model does not give it."""
    what = f"{entry.kind} {entry.name!r}"
    needs = needs_of(entry)
    top_level = len(path) == 1  # a part the flat token sequence reaches directly
    found = _unmet_problems(host, what, needs - ({"fixed-grid"} if not top_level else set()))
    if host.flat and top_level:
        found += _token_problems(host, what, needs)
    if "token-mask" in host.needs and entry.kind in ("attention", "block"):
        if "token-mask" not in offers_of(entry):
            found.append(
                f"model.type {host.type!r} passes a token mask to its blocks, and {what} cannot "
                "take one; choose a part that supports masks (e.g. mhsa, pre-norm)"
            )
    if host.packs_images and entry.kind in ("attention", "block"):
        if "block-mask" not in offers_of(entry):
            found.append(
                f"model.packing 'greedy' packs several images into one sequence and masks "
                f"attention between them; {what} cannot take such a mask (use packing: padded, "
                "one image per sequence, or a part that can: mhsa, pre-norm)"
            )
    if entry.kind == "head" and path == ("head",) and pool is not None:
        wanted = needs & set(POOLED_SHAPES)
        offered = offers_of(pool[1]) & set(POOLED_SHAPES)
        if wanted and offered and not wanted & offered:
            given = " or ".join(POOLED_SHAPES[w] for w in sorted(offered))
            found.append(
                f"{what} needs pooled features of shape {POOLED_SHAPES[sorted(wanted)[0]]}, but "
                f"pool {pool[0].type!r} gives {given}"
            )
    return found


def objective_problems(registry: Registry, spec: Any, host: Host) -> list[Problem]:
    """What the spec's objective needs from the model and the model does not offer."""
    objective = getattr(spec, "objective", None)
    if objective is None or ("objective", objective.type) not in registry:
        return []
    entry = registry.get("objective", objective.type)
    return [
        (("objective", "type"), sentence)
        for sentence in _unmet_problems(host, f"objective {objective.type!r}", needs_of(entry))
    ]


def data_problems(spec: Any, host: Host) -> list[Problem]:
    """Native-resolution data (``data.max_patches``): the model must take images of different
    sizes, and nothing may need the batch's images to share one size (mixup / cutmix)."""
    data = getattr(spec, "data", None)
    if getattr(data, "max_patches", None) is None:
        return []
    found: list[Problem] = []
    if "packed-images" not in host.offers:
        found.append(
            (
                ("data", "max_patches"),
                "data.max_patches feeds images of different sizes, which needs a model with a "
                f"packed path (navit, siglip2-naflex); model.type {host.type!r} takes one size "
                "(remove data.max_patches to resize every image to the model's size)",
            )
        )
    objective = getattr(spec, "objective", None)
    for name in ("mixup_alpha", "cutmix_alpha"):
        if getattr(objective, name, 0):
            found.append(
                (
                    ("objective", name),
                    f"{name.split('_')[0]} blends images of one size; with data.max_patches "
                    f"each image keeps its own size (set objective.{name}: 0)",
                )
            )
    return found


def problems(registry: Registry, spec: Any) -> list[Problem]:
    """(spec path, plain sentence) for every pair of parts that cannot work together."""
    host = Host.of(registry, spec.model)
    seen = host.under_objective(registry, getattr(spec, "objective", None))
    parts = list(components(registry, spec.model))
    pool = next(((c, e) for p, c, e in parts if e.kind == "pooling" and p == ("pool",)), None)
    found: list[Problem] = []
    for path, _, entry in parts:
        where = ("model", *path, "type")
        found += [(where, sentence) for sentence in _part_problems(seen, path, entry, pool)]
    found += objective_problems(registry, spec, host)
    found += data_problems(spec, host)
    found += nested_problems(registry, spec)
    return found


def _configs(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, BaseModel):
        yield path, value
        for name in type(value).model_fields:
            yield from _configs(getattr(value, name), (*path, name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _configs(item, (*path, i))


def _nested_spec_problems(
    registry: Registry, spec: Any, path: tuple[Any, ...], field: str, nested: Any
) -> list[Problem]:
    """One nested spec: its own problems at its path, and a teacher's class count."""
    source, overrides = nested
    try:
        inner, _ = validate_source(source, registry, overrides)
        inner_problems = problems(registry, inner)
    except SpecError as exc:
        found = []
        for issue in exc.issues:
            sub = tuple(issue.path.split(".")) if issue.path else ()
            where = (*path, field, *sub) if field == "spec" else (*path, field)
            found.append((where, f"in this nested spec: {issue.message}"))
        return found
    found = [
        ((*path, field, *sub) if field == "spec" else (*path, field), f"in this nested spec: {m}")
        for sub, m in inner_problems
    ]
    if path[-1:] == ("teacher",):
        found += [((*path, field), m) for m in _teacher_mismatches(spec.model, inner.model)]
    return found


def _size(model: Any) -> tuple[int, ...] | None:
    size = getattr(model, "image_size", None)
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else tuple(size)


def _teacher_mismatches(student: Any, teacher: Any) -> list[str]:
    """A teacher sees the student's images and is compared on the student's classes."""
    found = []
    mine, theirs = getattr(student, "num_classes", None), getattr(teacher, "num_classes", None)
    if None not in (mine, theirs) and mine != theirs:
        found.append(
            f"the teacher predicts {theirs} classes and the student {mine}; they must "
            f"agree (set the teacher's num_classes, e.g. overrides: {{num_classes: {mine}}})"
        )
    mine_size, their_size = _size(student), _size(teacher)
    if None not in (mine_size, their_size) and mine_size != their_size:
        found.append(
            f"the teacher takes {list(their_size)}-pixel images and the student is fed "
            f"{list(mine_size)}; they must agree (set the teacher's image_size, e.g. "
            f"overrides: {{image_size: {list(mine_size)}}})"
        )
    return found


def nested_problems(registry: Registry, spec: Any) -> list[Problem]:
    """Specs inside the spec (a distillation teacher's) are validated and checked too.

    A config offers them through ``nested_specs() -> {field: (source, overrides)}``; a nested
    spec under a field called ``teacher`` must also predict the student's classes.
    """
    found: list[Problem] = []
    for path, config in _configs(getattr(spec, "objective", None), ("objective",)):
        nested = getattr(config, "nested_specs", None)
        if callable(nested):
            for field, source in nested().items():
                found += _nested_spec_problems(registry, spec, path, field, source)
    return found


def check_rules(
    registry: Registry,
    spec: Any,
    *,
    file: str = "<spec>",
    positions: Mapping[tuple[Any, ...], tuple[int, int]] | None = None,
) -> None:
    """Raise one :class:`~vitzoo.errors.SpecError` listing every incompatible pair of parts."""
    found = problems(registry, spec)
    if found:
        raise SpecError([SpecIssue.at(path, message, file, positions) for path, message in found])
