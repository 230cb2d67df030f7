"""Plugin discovery and loading, one plugin at a time.

Every plugin -- the core's default components, the built-in variant families and third-party
packages -- goes through the same door: entry points in the ``vitzoo`` group (the core's own
components are registered the same way, just without an entry point). Each plugin is imported and
registered alone inside try/except; a plugin that fails is rolled back, recorded, and reported in
one line on stderr, and everything else keeps working. Nothing happens at import time: the default
system is built on first use.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from vitzoo import hookspecs
from vitzoo.errors import PluginLoadError
from vitzoo.hookspecs import ComponentRegister, ConverterRegister, PresetRegister
from vitzoo.registry import (
    Entry,
    PresetEntry,
    RegistrationError,
    Registry,
    make_converter,
    make_entry,
    make_preset,
)

ENTRY_POINT_GROUP = "vitzoo"
CORE_PLUGIN = "core"
CORE_MODULE = "vitzoo.core_plugin"
#: The distribution of vitzoo's own plugins (its presets are built and checked by its tests).
OWN_DISTRIBUTION = "vitzoo"


@dataclass
class PluginRecord:
    """What happened to one plugin (shown by ``vitzoo plugins``)."""

    name: str
    module: str
    source: str  # "core" | "entrypoint" | "manual"
    distribution: str = ""
    version: str = ""
    status: str = "ok"  # "ok" | "failed" | "disabled"
    error: str = ""
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class PluginSystem:
    """A plugin manager, the registry it filled and a record per plugin."""

    pm: pluggy.PluginManager
    registry: Registry
    records: dict[str, PluginRecord]

    @property
    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.status == "failed"]


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


def _is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _register_callback(
    kind: str, plugin: str, staged: list[Entry | PresetEntry]
) -> ComponentRegister | PresetRegister | ConverterRegister:
    """The ``register`` a hook of ``kind`` is handed: it validates and stages each entry."""
    if kind == "preset":

        def register_preset(name: str, spec: Any, **options: Any) -> None:
            staged.append(make_preset(plugin, name, spec, **options))

        return register_preset
    if kind == "converter":

        def register_converter(converter: Any) -> None:
            staged.append(make_converter(plugin, converter))

        return register_converter

    def register(name: str, factory: Callable[..., Any], config: Any, **options: Any) -> None:
        staged.append(make_entry(kind, plugin, name, factory, config, **options))

    return register


def _call_registration_hooks(system: PluginSystem, plugin: str) -> dict[str, int]:
    """Call this plugin's hooks only, staging its entries, then commit them all or none."""
    staged: list[Entry | PresetEntry] = []
    for hook_name, kind in hookspecs.HOOK_KINDS.items():
        caller = getattr(system.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            if impl.plugin_name != plugin:
                continue
            kwargs = {"register": _register_callback(kind, plugin, staged)}
            impl.function(**{a: kwargs[a] for a in impl.argnames})
    counts: dict[str, int] = {}
    try:
        for entry in staged:
            system.registry.add(entry)
            counts[entry.kind] = counts.get(entry.kind, 0) + 1
    except RegistrationError:
        system.registry.remove_plugin(plugin)
        raise
    return counts


def register_plugin(
    system: PluginSystem,
    obj: Any,
    name: str,
    *,
    source: str = "manual",
    distribution: str = "",
    version: str = "",
    strict: bool = False,
    quiet: bool = False,
) -> PluginRecord:
    """Register one plugin object (module or instance), isolating any failure it causes."""
    module = getattr(obj, "__name__", type(obj).__name__)
    record = PluginRecord(name, module, source, distribution, version)
    system.records[name] = record
    try:
        system.pm.register(obj, name=name)
        system.pm.check_pending()
        record.counts = _call_registration_hooks(system, name)
    except Exception as exc:
        _fail(system, record, exc, strict=strict, quiet=quiet)
    return record


def _fail(
    system: PluginSystem, record: PluginRecord, exc: BaseException, *, strict: bool, quiet: bool
) -> None:
    record.status = "failed"
    record.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    system.registry.remove_plugin(record.name)
    if system.pm.has_plugin(record.name):
        system.pm.unregister(name=record.name)
    if strict:
        raise PluginLoadError(f"plugin {record.name!r} failed: {record.error}") from exc
    if not quiet:
        print(
            f"vitzoo: skipped plugin {record.name!r} ({record.error}); "
            f"VITZOO_DISABLE_PLUGINS={record.name} hides this, VITZOO_STRICT_PLUGINS=1 raises",
            file=sys.stderr,
        )


def _selected_entry_points(
    only: Iterable[str] | None, disable: Iterable[str]
) -> tuple[list[EntryPoint], list[str]]:
    selected, disabled = [], []
    only_set = None if only is None else set(only)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else ""
        if ep.name in disable or dist in disable:
            disabled.append(ep.name)
        elif only_set is None or ep.name in only_set or dist in only_set:
            selected.append(ep)
    return selected, disabled


def load_plugins(
    *,
    entrypoints: bool = True,
    only: Iterable[str] | None = None,
    disable: Iterable[str] | None = None,
    strict: bool | None = None,
    extra: Iterable[tuple[str, Any]] = (),
    quiet: bool = False,
) -> PluginSystem:
    """Build a fresh plugin system.

    ``only`` / ``disable`` select entry points by entry-point or distribution name; they default
    to ``VITZOO_LOAD_PLUGINS`` / ``VITZOO_DISABLE_PLUGINS`` (comma-separated; an empty
    ``VITZOO_LOAD_PLUGINS`` loads no entry point). ``strict`` (default ``VITZOO_STRICT_PLUGINS``)
    re-raises the first failure. ``extra`` registers ``(name, plugin_object)`` pairs by hand, the
    way tests add a plugin without installing it.
    """
    if only is None:
        only = _env_list("VITZOO_LOAD_PLUGINS")
    disable = list(disable if disable is not None else _env_list("VITZOO_DISABLE_PLUGINS") or [])
    if strict is None:
        strict = _is_truthy(os.environ.get("VITZOO_STRICT_PLUGINS"))

    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    system = PluginSystem(pm=pm, registry=Registry(), records={})

    core = importlib.import_module(CORE_MODULE)
    register_plugin(system, core, CORE_PLUGIN, source="core", strict=True)

    if entrypoints:
        selected, disabled = _selected_entry_points(only, disable)
        for name in disabled:
            system.records[name] = PluginRecord(name, "", "entrypoint", status="disabled")
        for ep in selected:
            dist = ep.dist.name if ep.dist else ""
            version = ep.dist.version if ep.dist else ""
            record = PluginRecord(ep.name, ep.value, "entrypoint", dist, version)
            try:
                obj = ep.load()
            except Exception as exc:
                system.records[ep.name] = record
                _fail(system, record, exc, strict=strict, quiet=quiet)
                continue
            register_plugin(
                system,
                obj,
                ep.name,
                source="entrypoint",
                distribution=dist,
                version=version,
                strict=strict,
                quiet=quiet,
            )
    for name, obj in extra:
        register_plugin(system, obj, name, source="manual", strict=strict, quiet=quiet)
    return system


_default: PluginSystem | None = None


def get_plugin_system() -> PluginSystem:
    """The process-wide plugin system, built on first use."""
    global _default
    if _default is None:
        _default = load_plugins()
    return _default


def set_plugin_system(system: PluginSystem | None) -> PluginSystem | None:
    """Replace the process-wide plugin system (``None`` resets it); returns the previous one."""
    global _default
    previous, _default = _default, system
    return previous


def get_registry() -> Registry:
    return get_plugin_system().registry
