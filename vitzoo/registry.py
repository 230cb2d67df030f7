"""What is registered: kind -> name -> entry, with the plugin that provided it.

The registry is plain data. Plugins fill it through the ``register`` callbacks that
:mod:`vitzoo.plugins` hands to each hook; everything else (specs, the builder, the CLI, the
conformance suite) only reads it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from vitzoo.capabilities import normalise
from vitzoo.config import ComponentConfig
from vitzoo.errors import RegistrationError
from vitzoo.formats import SOURCE_KINDS
from vitzoo.suggest import did_you_mean
from vitzoo.tags import check_tags

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

#: Up to this many names, an unknown-name error lists them all; beyond, it says where they are.
LISTED_NAMES = 30

_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


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
class Release:
    """Weights released for a preset under another name.

    ``source`` is the kind of checkpoint (a source kind weight converters read: ``timm``, ``hf``,
    ``official``) and ``name`` what that source calls the model (``vit_base_patch16_224``,
    ``google/vit-base-patch16-224``). The README's pretrained-weights table is derived from these
    and the registered converters (:mod:`vitzoo.weights.table`). Room to grow: named weight tags
    (licence, dataset, preprocessing, top-1 per tag) become further fields with defaults, so what
    reads ``source`` and ``name`` keeps working.
    """

    source: str
    name: str


#: The source kind whose released names are also aliases (people type timm names).
ALIASED_SOURCE = "timm"

#: Fields a named weight tag may carry (``weights:`` of a catalogue entry).
TAG_FIELDS = frozenset(
    {
        "hub",
        "default",
        "licence",
        "dataset",
        "top1",
        "top1_source",
        "preprocessing",
        "num_classes",
        "notes",
    }
)


@dataclass(frozen=True)
class WeightTag:
    """One named release of a preset's weights (timm's ``model.tag``, written kebab-case).

    ``hub`` is the Hugging Face repository holding them (timm's own hub folders:
    ``timm/<timm name>.<tag>``, a ``config.json`` with the timm architecture and its
    ``pretrained_cfg`` plus ``model.safetensors``). The rest is what a user picks weights by:
    licence, training data, preprocessing (mean, std, crop_pct, interpolation), the reported
    ImageNet-1k top-1 and where it is reported, and the class count of the released head
    (21843 for ImageNet-21k heads; the build follows it unless told otherwise).
    """

    tag: str
    hub: str
    default: bool = False
    licence: str = ""
    dataset: str = ""
    top1: float | None = None
    top1_source: str = ""
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    notes: str = ""


def normalise_tag(tag: str) -> str:
    """timm spells tags with underscores (``augreg_in21k_ft_in1k``); vitzoo with dashes."""
    return tag.strip().lower().replace("_", "-")


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
    #: Other names that resolve to this preset (e.g. the timm name), owned by the same plugin.
    aliases: tuple[str, ...] = ()
    #: Published multiply-accumulates at the preset's input size, where the paper states them.
    expected_macs: int | None = None
    #: Released weights that compute this preset's function, by source kind.
    released: tuple[Release, ...] = ()
    #: Named weight tags (``vit-s16.augreg-in21k-ft-in1k``); at most one is the default.
    weights: tuple[WeightTag, ...] = ()

    def released_names(self, source: str) -> tuple[str, ...]:
        """What ``source`` (``timm``, ``hf``, ``official``) calls this preset's released weights."""
        return tuple(r.name for r in self.released if r.source == source)

    def weight_tag(self, tag: str) -> WeightTag | None:
        """The tag named ``tag`` (either spelling), or None."""
        wanted = normalise_tag(tag)
        return next((t for t in self.weights if t.tag == wanted), None)

    @property
    def default_weights(self) -> WeightTag | None:
        """The tag ``pretrained=True`` takes: the one marked default, else the only one."""
        marked = [t for t in self.weights if t.default]
        if marked:
            return marked[0]
        return self.weights[0] if len(self.weights) == 1 else None


def name_matches(names: Iterable[str], pattern: str) -> bool:
    """Shell-style, case-insensitive; a plain word (no ``*?[``) matches as a substring."""
    pattern = pattern.lower()
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return any(fnmatch.fnmatchcase(n.lower(), pattern) for n in names)


def _summary_of(obj: Any, given: str) -> str:
    if given:
        return given
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


class Registry:
    """Every registered entry, grouped by kind."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry | PresetEntry]] = {k: {} for k in KINDS}
        #: Preset aliases: alias -> canonical preset name (the preset's plugin owns the alias).
        self._aliases: dict[str, str] = {}
        #: Bumped on every change, so caches built from the registry (the spec model) notice.
        self.version = 0

    # -- reading -------------------------------------------------------------------------
    def canonical(self, kind: str, name: str) -> str:
        """``name`` itself, or the preset an alias (e.g. a timm model name) stands for."""
        if kind == "preset" and name not in self._entries["preset"]:
            return self._aliases.get(name, name)
        return name

    def get(self, kind: str, name: str) -> Any:
        try:
            return self._entries[kind][self.canonical(kind, name)]
        except KeyError:
            known = self.names(kind) if kind in self._entries else []
            if kind == "preset":
                known = [*known, *self._aliases]
            hint = did_you_mean(name, known) if isinstance(name, str) else ""
            names = sorted(self._entries.get(kind, {}))
            choices = (
                f"registered: {', '.join(names) or '(none)'}"
                if len(names) <= LISTED_NAMES
                else f"`vitzoo list --kind {kind}` lists the {len(names)} registered"
            )
            raise KeyError(f"no {kind} named {name!r}{hint}; {choices}") from None

    def find(self, pattern: str, kind: str | None = None) -> list[Entry | PresetEntry]:
        """Entries whose name, or a preset alias, matches a shell-style ``pattern`` (``cait-*``);
        a pattern without wildcards matches every name containing it."""
        return [
            e
            for e in self.entries(kind)
            if name_matches([e.name, *getattr(e, "aliases", ())], pattern)
        ]

    def split_weights_name(self, name: str) -> tuple[PresetEntry, str] | None:
        """``PRESET.TAG`` (or timm's ``model_name.tag``) -> (the preset, the tag as written);
        None when the part before the last dot is no preset or alias. The tag is not checked
        here (:mod:`vitzoo.weights.named` says which tags exist)."""
        if not isinstance(name, str) or "." not in name:
            return None
        preset, _, tag = name.rpartition(".")
        if not tag or ("preset", preset) not in self:
            return None
        return self.get("preset", preset), tag

    def aliases(self) -> dict[str, str]:
        """Every preset alias and the preset it resolves to, sorted by alias."""
        return dict(sorted(self._aliases.items()))

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> Iterator[Entry | PresetEntry]:
        kinds = KINDS if kind is None else (kind,)
        for k in kinds:
            for name in sorted(self._entries[k]):
                yield self._entries[k][name]

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        return self.canonical(kind, name) in self._entries.get(kind, {})

    # -- writing -------------------------------------------------------------------------
    def add(self, entry: Entry | PresetEntry) -> None:
        existing = self._entries[entry.kind].get(entry.name)
        if existing is not None:
            raise RegistrationError(
                f"duplicate {entry.kind} {entry.name!r}: registered by plugin "
                f"{existing.plugin!r} and again by plugin {entry.plugin!r}"
            )
        if isinstance(entry, PresetEntry):
            self._check_names_free(entry)
            for alias in entry.aliases:
                self._aliases[alias] = entry.name
        self._entries[entry.kind][entry.name] = entry
        self.version += 1

    def _check_names_free(self, entry: PresetEntry) -> None:
        """A preset's name and aliases may not collide with another preset's name or alias."""
        presets = self._entries["preset"]
        if entry.name in self._aliases:
            owner = presets[self._aliases[entry.name]]
            raise RegistrationError(
                f"preset {entry.name!r} of plugin {entry.plugin!r} is already an alias of "
                f"preset {owner.name!r} registered by plugin {owner.plugin!r}"
            )
        for alias in entry.aliases:
            taken_by = presets.get(self._aliases.get(alias, alias))
            if taken_by is not None:
                what = "an alias of preset" if alias in self._aliases else "the preset"
                raise RegistrationError(
                    f"duplicate preset alias {alias!r}: {what} {taken_by.name!r} registered by "
                    f"plugin {taken_by.plugin!r}, and an alias of preset {entry.name!r} "
                    f"registered by plugin {entry.plugin!r}"
                )

    def converters(self) -> list[Any]:
        """Every registered weight converter (:class:`vitzoo.weights.WeightConverter`), by name."""
        return list(self.entries("converter"))

    def remove_plugin(self, plugin: str) -> None:
        """Roll back everything one plugin registered (its preset aliases included)."""
        for by_name in self._entries.values():
            for name in [n for n, e in by_name.items() if e.plugin == plugin]:
                del by_name[name]
                self.version += 1
        self._aliases = {a: n for a, n in self._aliases.items() if n in self._entries["preset"]}


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
    return Entry(
        kind=kind,
        name=name,
        factory=factory,
        config=config,
        tags=check_tags(tags, where=where),
        summary=_summary_of(factory, summary) or _summary_of(config, ""),
        plugin=plugin,
        example=dict(example or {}),
        needs=normalise(needs, where=where),
        offers=normalise(offers, where=where),
        known_failures=dict(known_failures or {}),
    )


def make_converter(plugin: str, converter: Any) -> Any:
    """Validate a registered weight converter and stamp it with the plugin that provided it.

    Checked by what the loaders use (a frozen dataclass with a name, architectures, and
    ``recognises`` / ``convert``), not by its class: the registry sits below the weights layer
    and must not import it.
    """
    name = getattr(converter, "name", "?")
    where = f"plugin {plugin!r} registering converter {name!r}"
    usable = dataclasses.is_dataclass(converter) and not isinstance(converter, type)
    for method in ("recognises", "convert"):
        usable = usable and callable(getattr(converter, method, None))
    if not usable or not hasattr(converter, "plugin"):
        raise RegistrationError(f"{where}: register a vitzoo.weights.WeightConverter")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegistrationError(f"{where}: names are lowercase-kebab (regex {_NAME.pattern})")
    if not getattr(converter, "architectures", ()):
        raise RegistrationError(f"{where}: architectures must name at least one model type")
    return dataclasses.replace(converter, plugin=plugin)


def make_preset(
    plugin: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    citation: str = "",
    expected_params: int | None = None,
    summary: str = "",
    tags: Any = (),
    aliases: Any = (),
    expected_macs: int | None = None,
    released: Mapping[str, Any] | None = None,
    weights: Mapping[str, Any] | None = None,
) -> PresetEntry:
    where = f"plugin {plugin!r} registering preset {name!r}"
    if not _NAME.match(name):
        raise RegistrationError(f"{where}: names are lowercase-kebab (regex {_NAME.pattern})")
    if not isinstance(spec, Mapping) or "model" not in spec:
        raise RegistrationError(f"{where}: spec must be a mapping with a 'model' section")
    aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)
    releases = _releases(released or {}, where)
    aliased = tuple(r.name for r in releases if r.source == ALIASED_SOURCE)
    listed_twice = sorted(set(aliases) & set(aliased))
    if listed_twice:
        raise RegistrationError(
            f"{where}: {listed_twice} listed under aliases and released {ALIASED_SOURCE}; list "
            f"them once, under released (released {ALIASED_SOURCE} names are aliases too)"
        )
    aliases = (*aliases, *aliased)
    for alias in aliases:
        if not isinstance(alias, str) or not _NAME.match(alias) or alias == name:
            raise RegistrationError(
                f"{where}: alias {alias!r} must be a lowercase name other than the preset's "
                f"(regex {_NAME.pattern})"
            )
    if len(set(aliases)) != len(aliases):
        raise RegistrationError(f"{where}: an alias is listed twice in {list(aliases)}")
    return PresetEntry(
        name=name,
        spec=dict(spec),
        citation=citation,
        expected_params=expected_params,
        summary=summary,
        plugin=plugin,
        tags=check_tags(tags, where=where),
        aliases=aliases,
        expected_macs=expected_macs,
        released=releases,
        weights=_weight_tags(weights or {}, where),
    )


def _releases(released: Mapping[str, Any], where: str) -> tuple[Release, ...]:
    """``{source kind: name or [names]}`` -> :class:`Release` entries, checked."""
    if not isinstance(released, Mapping):
        raise RegistrationError(f"{where}: released must map a source kind to names")
    out: list[Release] = []
    for source, names in released.items():
        if source not in SOURCE_KINDS:
            raise RegistrationError(
                f"{where}: released weights are keyed by source kind "
                f"({', '.join(SOURCE_KINDS)}), not {source!r}"
            )
        names = (names,) if isinstance(names, str) else names
        if (
            not isinstance(names, list | tuple)
            or not names
            or not all(isinstance(n, str) and n.strip() for n in names)
        ):
            raise RegistrationError(f"{where}: released {source} names must be non-empty strings")
        if len(set(names)) != len(names):
            raise RegistrationError(f"{where}: a released {source} name is listed twice")
        out.extend(Release(source, n) for n in names)
    return tuple(out)


def _weight_tags(weights: Mapping[str, Any], where: str) -> tuple[WeightTag, ...]:
    """``{tag: {hub: ORG/NAME, licence: ..., ...}}`` -> :class:`WeightTag` entries, checked."""
    if not isinstance(weights, Mapping):
        raise RegistrationError(f"{where}: weights must map a tag to its release")
    out: list[WeightTag] = []
    for tag, fields in weights.items():
        name = normalise_tag(str(tag))
        if not _NAME.match(name) or "." in name:
            raise RegistrationError(f"{where}: weight tag {tag!r} must be lowercase-kebab")
        if not isinstance(fields, Mapping):
            raise RegistrationError(f"{where}: weight tag {name!r} must be a mapping")
        unknown = sorted(set(fields) - TAG_FIELDS)
        if unknown:
            raise RegistrationError(
                f"{where}: weight tag {name!r} has unknown fields {unknown}; allowed: "
                f"{', '.join(sorted(TAG_FIELDS))}"
            )
        hub = fields.get("hub")
        if not isinstance(hub, str) or hub.count("/") != 1:
            raise RegistrationError(f"{where}: weight tag {name!r} needs hub: ORG/NAME")
        try:
            out.append(WeightTag(tag=name, **dict(fields)))
        except TypeError as exc:
            raise RegistrationError(f"{where}: weight tag {name!r}: {exc}") from None
    if len({t.tag for t in out}) != len(out):
        raise RegistrationError(f"{where}: a weight tag is listed twice")
    if sum(t.default for t in out) > 1:
        raise RegistrationError(f"{where}: more than one weight tag is the default")
    return tuple(out)
