"""Discovery: every registered thing as a :class:`Variant` the conformance checks can build.

A variant knows how to make a CPU-tiny model that exercises it:

* an **architecture** is built from its registration ``example`` (overrides of its config);
* a **component** is slotted into a host model: by default the tiny ``vit`` (the ``vit``
  architecture with its own ``example``), at the field its kind occupies (``attention`` ->
  ``attention``, ``pooling`` -> ``pool``, ...), as ``{"type": name, **example["config"]}``.
  ``example["model"]`` is merged into the host spec and may name another host ``type`` (a
  tubelet patchifier needs a video model); ``example["field"]`` (a dotted path) places the
  component somewhere else in the host when its kind's usual field is not where it belongs;
* an **objective** gets the same tiny host model plus ``objective: {"type": name, **config}``
  in the spec, so objective checks (``vitzoo.testing.objective_checks``) start from a model.

Everything goes through :func:`vitzoo.spec.validate_spec` and
:func:`vitzoo.builder.build_from_spec`, so the YAML/spec path users take is the one tested.
This module does not import torch until a model is built.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vitzoo.plugins import PluginLoadError, PluginSystem, load_plugins
from vitzoo.registry import COMPONENT_KINDS, Entry
from vitzoo.spec import SpecBase, deep_merge, set_path, validate_spec

if TYPE_CHECKING:
    from torch import nn

#: Kinds the conformance suite covers (presets have their own test: they are full-size specs).
VARIANT_KINDS: tuple[str, ...] = (*COMPONENT_KINDS, "architecture", "objective")

#: Where a component of each kind sits in the host architecture's config.
HOST_FIELD: dict[str, str] = {
    "patchifier": "patch",
    "posenc": "posenc",
    "attention": "attention",
    "mlp": "mlp",
    "block": "block",
    "pooling": "pool",
    "head": "head",
}

#: The architecture a component is slotted into unless its example names another.
DEFAULT_HOST = "vit"


class VariantError(LookupError):
    """Discovery found nothing to test, or a variant's example cannot make a host model."""


@dataclass(frozen=True, eq=False)
class Variant:
    """One registered thing under test, with the plugin system it was registered in.

    Compared by identity: two discoveries give distinct variants (each with its own system).
    """

    kind: str
    name: str
    entry: Entry
    plugin: str
    tags: frozenset[str]
    system: PluginSystem = field(repr=False, compare=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        """``kind:name``, the id used in test names and ``expected_failed_checks``."""
        return f"{self.kind}:{self.name}"

    def __str__(self) -> str:
        return f"{self.id} (plugin {self.plugin!r})"

    # -- specs ---------------------------------------------------------------------------
    def tiny_spec_data(self) -> dict[str, Any]:
        """The CPU-tiny spec (a plain mapping) that exercises this variant."""
        example = dict(self.entry.example or {})
        if self.kind == "architecture":
            return {"model": {"type": self.name, **copy.deepcopy(example)}}
        if self.kind in HOST_FIELD or self.kind == "objective":
            _check_component_example(self, example)
            model = self._host_model(example.get("model", {}))
            own = {"type": self.name, **copy.deepcopy(dict(example.get("config", {})))}
            if self.kind == "objective":
                return {"model": model, "objective": own}
            where = example.get("field", HOST_FIELD[self.kind])
            return {"model": set_path(model, where, own)}
        raise VariantError(f"{self}: kind {self.kind!r} has no tiny model")

    def _host_model(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        host = overrides.get("type", DEFAULT_HOST)
        registry = self.system.registry
        if ("architecture", host) not in registry:
            raise VariantError(
                f"{self}: host architecture {host!r} is not registered; registered: "
                f"{', '.join(registry.names('architecture')) or '(none)'}"
            )
        base = {"type": host, **copy.deepcopy(dict(registry.get("architecture", host).example))}
        return deep_merge(base, overrides)

    def tiny_spec(self) -> SpecBase:
        """The validated tiny spec (cached: validation is the slow part of a build)."""
        if "spec" not in self._cache:
            # trial=False: each check builds the model itself and names what is wrong in its
            # own words; the trial build is held to its contract by check_spec_mutations
            self._cache["spec"] = validate_spec(
                self.system.registry,
                self.tiny_spec_data(),
                file=f"<{self.id} example>",
                failed_plugins=[r.name for r in self.system.failed],
                trial=False,
            )
        return self._cache["spec"]

    def build(self, seed: int = 0) -> nn.Module:
        """A fresh tiny model in eval mode, initialised from ``seed`` (global RNG untouched)."""
        import torch

        from vitzoo.builder import build_from_spec

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_from_spec(self.tiny_spec(), system=self.system)
        return model.eval()


def _check_component_example(variant: Variant, example: Mapping[str, Any]) -> None:
    unknown = set(example) - {"config", "model", "field"}
    if unknown:
        raise VariantError(
            f"{variant}: a component example has the keys 'config', 'model' and 'field'; "
            f"got unknown {sorted(unknown)}"
        )


def plugin_system(*, strict: bool = True) -> PluginSystem:
    """A fresh plugin system with every installed plugin (failures raise when ``strict``)."""
    return load_plugins(strict=strict, quiet=not strict)


def variants(
    plugin: str | None = None,
    kind: str | None = None,
    *,
    system: PluginSystem | None = None,
) -> list[Variant]:
    """Everything registered (presets excepted), optionally only one plugin's or one kind's.

    Without ``system`` a fresh one is loaded. With ``plugin=None`` it is strict: any plugin that
    fails to load raises, so a broken plugin cannot hide its variants from the suite. With a
    ``plugin`` (entry-point or distribution name), other plugins that fail are tolerated (a third party's tests should not
    break because of an unrelated installed package) but that plugin failing raises, and so
    does it registering nothing: that proves its entry point is wired up.
    """
    if kind is not None and kind not in VARIANT_KINDS:
        raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(VARIANT_KINDS)}")
    if system is None:
        system = plugin_system(strict=plugin is None)
    if plugin is not None:
        record = system.records.get(plugin) or next(
            (r for r in system.records.values() if r.distribution and r.distribution == plugin),
            None,
        )
        if record is None:
            known = ", ".join(sorted(system.records)) or "(none)"
            raise VariantError(f"no plugin named {plugin!r} is installed; plugins: {known}")
        if record.status != "ok":
            state = "failed to load" if record.status == "failed" else f"is {record.status}"
            raise PluginLoadError(f"plugin {plugin!r} {state}: {record.error}")
        plugin = record.name  # a distribution name selects its entry point
    kinds = VARIANT_KINDS if kind is None else (kind,)
    found = [
        Variant(e.kind, e.name, e, e.plugin, e.tags, system)
        for k in kinds
        for e in system.registry.entries(k)
        if plugin is None or e.plugin == plugin
    ]
    if plugin is not None and not found:
        what = "anything" if kind is None else f"any {kind}"
        raise VariantError(
            f"plugin {plugin!r} registered nothing testable (did not register {what}); "
            "is its entry point in the 'vitzoo' group and do its hooks use @vitzoo.hookimpl?"
        )
    return found
