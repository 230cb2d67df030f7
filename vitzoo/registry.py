"""What is registered: kind -> name -> entry, with the plugin that provided it.

The registry is plain data. Plugins fill it through the ``register`` callbacks that
:mod:`vitzoo.plugins` hands to each hook; everything else (specs, the builder, the CLI, the
conformance suite) only reads it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from vitzoo.capabilities import normalise
from vitzoo.config import ComponentConfig

#: Component kinds, in the order a ViT uses them, then whole architectures and the rest.
COMPONENT_KINDS: tuple[str, ...] = (
    "patchifier",
    "posenc",
    "attention",
    "mlp",
    "block",
    "pooling",
    "head",
)
KINDS: tuple[str, ...] = (*COMPONENT_KINDS, "architecture", "objective", "preset", "converter")

_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


class RegistrationError(ValueError):
    """A plugin registered something invalid (bad name, bad config class, duplicate)."""


@dataclass(frozen=True)
class Entry:
    """One registered component, architecture or objective."""

    kind: str
    name: str
    factory: Callable[..., Any]
    config: type[ComponentConfig]
    tags: frozenset[str] = frozenset()
    summary: str = ""
    plugin: str = "?"
    #: Small overrides that make a CPU-cheap instance, used by the conformance suite.
    example: Mapping[str, Any] = field(default_factory=dict)
    #: Capabilities (:mod:`vitzoo.capabilities`) this part needs from the model around it and
    #: offers to it; empty means "derived from ``tags``".
    needs: frozenset[str] = frozenset()
    offers: frozenset[str] = frozenset()
    #: Conformance checks known to fail, check name -> reason; every runner (pytest,
    #: ``vitzoo check``) reads this one declaration.
    known_failures: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PresetEntry:
    """A named full spec (usually a paper configuration)."""

    name: str
    spec: Mapping[str, Any]
    citation: str = ""
    expected_params: int | None = None
    summary: str = ""
    plugin: str = "?"
    tags: frozenset[str] = frozenset()
    kind: str = "preset"


def _summary_of(obj: Any, given: str) -> str:
    if given:
        return given
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


class Registry:
    """Every registered entry, grouped by kind."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry | PresetEntry]] = {k: {} for k in KINDS}
        #: Bumped on every change, so caches built from the registry (the spec model) notice.
        self.version = 0

    # -- reading -------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Any:
        try:
            return self._entries[kind][name]
        except KeyError:
            choices = ", ".join(sorted(self._entries.get(kind, {}))) or "(none)"
            raise KeyError(f"no {kind} named {name!r}; registered: {choices}") from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> Iterator[Entry | PresetEntry]:
        kinds = KINDS if kind is None else (kind,)
        for k in kinds:
            for name in sorted(self._entries[k]):
                yield self._entries[k][name]

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        return name in self._entries.get(kind, {})

    # -- writing -------------------------------------------------------------------------
    def add(self, entry: Entry | PresetEntry) -> None:
        existing = self._entries[entry.kind].get(entry.name)
        if existing is not None:
            raise RegistrationError(
                f"duplicate {entry.kind} {entry.name!r}: registered by plugin "
                f"{existing.plugin!r} and again by plugin {entry.plugin!r}"
            )
        self._entries[entry.kind][entry.name] = entry
        self.version += 1

    def converters(self) -> list[Any]:
        """Every registered :class:`vitzoo.weights.WeightConverter`, by name."""
        return list(self.entries("converter"))

    def remove_plugin(self, plugin: str) -> None:
        """Roll back everything one plugin registered."""
        for by_name in self._entries.values():
            for name in [n for n, e in by_name.items() if e.plugin == plugin]:
                del by_name[name]
                self.version += 1


def make_entry(
    kind: str,
    plugin: str,
    name: str,
    factory: Callable[..., Any],
    config: type[ComponentConfig],
    *,
    tags: Any = (),
    summary: str = "",
    example: Mapping[str, Any] | None = None,
    needs: Any = (),
    offers: Any = (),
    known_failures: Mapping[str, str] | None = None,
) -> Entry:
    """Validate one registration and turn it into an :class:`Entry` (errors name the plugin)."""
    where = f"plugin {plugin!r} registering {kind} {name!r}"
    if not _NAME.match(name):
        raise RegistrationError(f"{where}: names are lowercase-kebab (regex {_NAME.pattern})")
    if not callable(factory):
        raise RegistrationError(f"{where}: factory must be callable")
    if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
        raise RegistrationError(f"{where}: config must subclass vitzoo.ComponentConfig")
    type_field = config.model_fields.get("type")
    if type_field is None or get_args(type_field.annotation) != (name,):
        raise RegistrationError(
            f"{where}: config {config.__name__} needs the field  type: Literal[{name!r}] = {name!r}"
        )
    if isinstance(tags, str):
        tags = (tags,)
    return Entry(
        kind=kind,
        name=name,
        factory=factory,
        config=config,
        tags=frozenset(tags),
        summary=_summary_of(factory, summary) or _summary_of(config, ""),
        plugin=plugin,
        example=dict(example or {}),
        needs=normalise(needs, where=where),
        offers=normalise(offers, where=where),
        known_failures=dict(known_failures or {}),
    )


def make_converter(plugin: str, converter: Any) -> Any:
    """Validate a registered weight converter and stamp it with the plugin that provided it."""
    from dataclasses import replace

    from vitzoo.weights.converter import WeightConverter

    name = getattr(converter, "name", "?")
    where = f"plugin {plugin!r} registering converter {name!r}"
    if not isinstance(converter, WeightConverter):
        raise RegistrationError(f"{where}: register a vitzoo.weights.WeightConverter")
    if not _NAME.match(name):
        raise RegistrationError(f"{where}: names are lowercase-kebab (regex {_NAME.pattern})")
    if not converter.architectures:
        raise RegistrationError(f"{where}: architectures must name at least one model type")
    return replace(converter, plugin=plugin)


def make_preset(
    plugin: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    citation: str = "",
    expected_params: int | None = None,
    summary: str = "",
    tags: Any = (),
) -> PresetEntry:
    where = f"plugin {plugin!r} registering preset {name!r}"
    if not _NAME.match(name):
        raise RegistrationError(f"{where}: names are lowercase-kebab (regex {_NAME.pattern})")
    if not isinstance(spec, Mapping) or "model" not in spec:
        raise RegistrationError(f"{where}: spec must be a mapping with a 'model' section")
    return PresetEntry(
        name=name,
        spec=dict(spec),
        citation=citation,
        expected_params=expected_params,
        summary=summary,
        plugin=plugin,
        tags=frozenset((tags,) if isinstance(tags, str) else tags),
    )
