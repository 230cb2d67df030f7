"""Discovery: every registered thing as a :class:`Variant` the conformance checks can build.

A variant knows how to make a CPU-tiny model that exercises it:

* an **architecture** is built from its registration ``example`` (overrides of its config);
* a **component** is slotted into a host model (a registered architecture built from its own
  ``example``), at the field its kind occupies (``attention`` -> ``attention``, ``pooling`` ->
  ``pool``, ...), as ``{"type": name, **example["config"]}``. ``example["model"]`` is merged
  into the host spec and may name the host ``type`` (a tubelet patchifier needs a video
  model); ``example["field"]`` (a dotted path) places the component somewhere else in the host
  when its kind's usual field is not where it belongs. Without a named host the suite picks
  one (:func:`choose_host`): :data:`DEFAULT_HOST` when it is registered, else the first
  registered architecture whose config has the fields the example sets, which offers the
  capabilities the component needs and which accepts it; when none can, the variant's model
  checks are skipped with the reason (the core depends on no one plugin);
* an **objective** gets the same tiny host model plus ``objective: {"type": name, **config}``
  in the spec, so objective checks (``vitzoo.testing.objective_checks``) start from a model;
* a **preset** has no tiny model: it is a full-size spec, checked on the meta device
  (``vitzoo.testing.preset_checks``); :data:`TINY_MODEL_KINDS` are the others.

Everything goes through :func:`vitzoo.spec.validate_spec` and
:func:`vitzoo.builder.build_from_spec`, so the YAML/spec path users take is the one tested.
This module does not import torch until a model is built.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from unittest import SkipTest

from vitzoo.capabilities import CONTEXT_WORDS, needs_of, offers_of
from vitzoo.plugins import PluginLoadError, PluginSystem, load_plugins
from vitzoo.registry import COMPONENT_KINDS, Entry
from vitzoo.spec import SpecBase, SpecError, deep_merge, set_path, validate_spec

if TYPE_CHECKING:
    from torch import nn

#: Kinds the conformance suite covers. Presets are full-size specs with no tiny model: their
#: checks (:mod:`vitzoo.testing.preset_checks`) validate and trial-build them on the meta device.
VARIANT_KINDS: tuple[str, ...] = (*COMPONENT_KINDS, "architecture", "objective", "preset")
#: The kinds whose variants make a tiny model (:meth:`Variant.tiny_spec`); not presets.
TINY_MODEL_KINDS: tuple[str, ...] = (*COMPONENT_KINDS, "architecture", "objective")

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

#: The host a component is slotted into when its example names none and this architecture is
#: registered (the plain ViT: the conformance figures were established on it). A preference,
#: not a dependency: without it :func:`choose_host` takes another architecture that fits.
DEFAULT_HOST = "vit"


class NoHostArchitecture(SkipTest):
    """No registered architecture can host a component: its model checks do not apply here.

    A :class:`unittest.SkipTest`, so pytest and :func:`vitzoo.testing.check_variant` report the
    reason as a skip, not a failure (e.g. ``VITZOO_DISABLE_PLUGINS=vit`` with nothing else
    that can hold a class-token pooling).
    """


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
        """The CPU-tiny spec (a plain mapping) that exercises this variant.

        Raises :class:`NoHostArchitecture` (a skip) when the variant is a component or an
        objective and no registered architecture can host it.
        """
        example = dict(self.entry.example or {})
        if self.kind == "architecture":
            return {"model": {"type": self.name, **copy.deepcopy(example)}}
        if self.kind in HOST_FIELD or self.kind == "objective":
            _check_component_example(self, example)
            if "host" not in self._cache:
                self._cache["host"] = choose_host(self)
            return self._hosted_spec_data(self._cache["host"], example)
        raise VariantError(
            f"{self}: kind {self.kind!r} has no tiny model (presets are full-size specs; "
            f"select kind= among {', '.join(TINY_MODEL_KINDS)})"
        )

    def _hosted_spec_data(self, host: str, example: Mapping[str, Any]) -> dict[str, Any]:
        """This component (or objective) in the tiny ``host`` architecture."""
        registry = self.system.registry
        overrides = dict(example.get("model", {}))
        base = {"type": host, **copy.deepcopy(dict(registry.get("architecture", host).example))}
        model = deep_merge(base, overrides)
        own = {"type": self.name, **copy.deepcopy(dict(example.get("config", {})))}
        if self.kind == "objective":
            return {"model": model, "objective": own}
        return {"model": set_path(model, example.get("field", HOST_FIELD[self.kind]), own)}

    def tiny_spec(self) -> SpecBase:
        """The validated tiny spec (cached: validation is the slow part of a build)."""
        if "spec" not in self._cache:
            # validation only: each check builds the model itself and names what is wrong in
            # its own words; the trial build is held to its contract by check_spec_mutations
            self._cache["spec"] = validate_spec(
                self.system.registry,
                self.tiny_spec_data(),
                file=f"<{self.id} example>",
                failed_plugins=[r.name for r in self.system.failed],
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


def _fits(variant: Variant, host: str, example: Mapping[str, Any]) -> bool:
    """Whether ``host`` has the config fields the example sets and offers what the part needs."""
    registry = variant.system.registry
    arch = registry.get("architecture", host)
    fields = set(arch.config.model_fields)
    wanted = {k for k in example.get("model", {}) if k != "type"}
    if variant.kind in HOST_FIELD:
        wanted.add(str(example.get("field", HOST_FIELD[variant.kind])).split(".")[0])
    context = needs_of(variant.entry) & CONTEXT_WORDS
    return wanted <= fields and context <= offers_of(arch)


def choose_host(variant: Variant) -> str:
    """The architecture a component or objective variant is built into (see the module doc).

    A host the example names is used as is (a missing one is a :class:`VariantError`: the
    example is wrong, or its plugin's host is not installed). :data:`DEFAULT_HOST` is used
    whenever it is registered, exactly as if named, so a mistake in the example still fails
    there. Any other candidate must fit (:func:`_fits`) and accept the part (its tiny spec
    validates), since the part's author did not choose it.
    """
    registry = variant.system.registry
    example = dict(variant.entry.example or {})
    named = example.get("model", {}).get("type")
    if named is not None:
        if ("architecture", named) not in registry:
            raise VariantError(
                f"{variant}: host architecture {named!r} is not registered; registered: "
                f"{', '.join(registry.names('architecture')) or '(none)'}"
            )
        return named
    if ("architecture", DEFAULT_HOST) in registry:
        return DEFAULT_HOST
    # hosts that keep every token first: one that drops or merges tokens changes what the
    # part sees, so it is the last resort
    ranked = sorted(
        registry.names("architecture"),
        key=lambda n: ("drops-tokens" in offers_of(registry.get("architecture", n)), n),
    )
    for host in ranked:
        if host == DEFAULT_HOST or not _fits(variant, host, example):
            continue
        try:
            validate_spec(registry, variant._hosted_spec_data(host, example))
        except SpecError:
            continue
        return host
    needs = sorted(needs_of(variant.entry)) or ["nothing declared"]
    raise NoHostArchitecture(
        f"{variant.id}: no registered architecture can host it (it needs: {', '.join(needs)}; "
        f"architectures: {', '.join(registry.names('architecture')) or '(none)'})"
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
    """Everything registered (presets included), optionally only one plugin's or one kind's.

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
        if kind is not None and any(e.plugin == plugin for e in system.registry.entries()):
            raise VariantError(f"plugin {plugin!r} registered no {kind}; nothing to check")
        raise VariantError(
            f"plugin {plugin!r} registered nothing testable; is its entry point in the "
            "'vitzoo' group and do its hooks use @vitzoo.hookimpl?"
        )
    return found
