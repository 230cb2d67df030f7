"""Build a vitzoo model from any weights source: the one path every entry point goes through.

``vitzoo.build(P, weights=S)``, a spec's ``weights:`` section, ``vitzoo build --weights``,
``vitzoo convert`` and ``train.init_from`` all call :func:`load_pretrained`:

1. read the source (:mod:`~vitzoo.weights.sources`) and find its spec
   (:mod:`~vitzoo.weights.source_spec`): stored (vitzoo), derived from ``config.json`` by the
   converter (Hugging Face, timm hub folders), or the one the caller names (plain timm /
   official state dicts say nothing about their model);
2. the *target* spec is the caller's (preset / spec + overrides) or the source's + overrides,
   resolved once (validation, whole-spec rules, trial build);
3. build the target once, convert the source against the model the checkpoint was made for
   (the target with the source's class count, image size and channels; a meta-device build
   only where those differ) with strict accounting of every tensor, adapt to the target
   (:mod:`~vitzoo.weights.adapt`) and load;
4. carry preprocessing (mean/std, interpolation, crop, input size, class names) along.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.builder import SpecSource, build_from_spec, resolve
from vitzoo.checkpoint import save
from vitzoo.components.resample import table_resamplings
from vitzoo.errors import SpecError, WeightsAdaptationWarning, WeightsError, warn
from vitzoo.formats import WEIGHTS_CONVERTER_KEY, WEIGHTS_SOURCE_KEY
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.spec import SpecBase, spec_to_dict
from vitzoo.spec.sources import given_model_fields, validate_source
from vitzoo.weights import preprocessing as prep
from vitzoo.weights.adapt import ADAPTABLE, Shapes, apply_adaptations, plan_adaptations
from vitzoo.weights.converter import (
    Conversion,
    WeightConverter,
    apply_rules,
    load_converted,
    raise_for_problems,
)
from vitzoo.weights.rules import Rename
from vitzoo.weights.selection import family_hint, pick_converter
from vitzoo.weights.source_spec import preprocessing_of, source_spec
from vitzoo.weights.sources import WeightsSource, read_source

logger = logging.getLogger("vitzoo.weights")
IDENTITY = (Rename(r"(.*)", r"\1"),)
SOURCE_KINDS_FOR_FORMAT = {"timm": ("timm", "official"), "official": ("official", "timm")}
#: The model fields that make up the classifier: where the caller sets neither, they follow the
#: weights (as timm's ``pretrained_cfg`` sets the class count of ``pretrained=True``).
HEAD_FIELDS = ("num_classes", "head")


@dataclass
class Pretrained:
    """A model loaded from a weights source, with everything learned on the way."""

    model: nn.Module
    spec: SpecBase
    preprocessing: prep.Preprocessing
    conversion: Conversion
    source: WeightsSource
    converter: str
    notes: list[str] = field(default_factory=list)
    #: The target's trial report (parameters; MACs when ``load_pretrained(macs=True)``), where
    #: this load resolved the target itself; None for a spec object given whole.
    report: Any = None

    def metadata(self) -> dict[str, str]:
        """Checkpoint metadata recording where the weights came from and how to feed them."""
        return {
            **self.preprocessing.to_metadata(),
            WEIGHTS_SOURCE_KEY: self.source.location,
            WEIGHTS_CONVERTER_KEY: self.converter,
        }


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def spec_differences(source_model: Mapping[str, Any], target_model: Mapping[str, Any]) -> list[str]:
    """Model settings where the caller's spec departs from the one the weights were made for
    (other than the adaptable class count, image size and channels, and dropout rates)."""
    src, dst = _flatten(source_model), _flatten(target_model)
    out = []
    for key in sorted(set(src) & set(dst)):
        if key.split(".")[0] in ADAPTABLE or "drop" in key.split(".")[-1]:
            continue  # adapted on load, or training-only (dropout rates leave eval unchanged)
        a, b = src[key], dst[key]
        if isinstance(a, list | tuple) or isinstance(b, list | tuple):
            same = list(a or []) == list(b or [])
        else:
            same = a == b
        if not same:
            out.append(f"model.{key}={a!r} (spec: {b!r})")
    return out


#: Trial reports of the specs a load resolved, by the spec object's id; present (even empty)
#: when the caller asked for MACs, so each resolution counts them in its one trial.
Trials = dict[int, Any] | None


def _resolve(
    data: Any,
    where: str,
    system: PluginSystem,
    overrides: Mapping[str, Any],
    trials: Trials = None,
) -> SpecBase:
    """The fully resolved spec (validation, rules, trial build) of the model to build; its
    trial report goes to ``trials`` (keyed by the spec's id) when one is kept."""
    try:
        resolved = resolve(data, overrides, system=system, macs=trials is not None)
    except SpecError as exc:
        raise WeightsError(
            f"{where}: the spec for these weights is not valid here:\n{exc}"
        ) from None
    if trials is not None:
        trials[id(resolved.spec)] = resolved.report
    return resolved.spec


class _Shapes:
    """State-dict shapes of the target model with some model fields changed, built on the meta
    device only for field sets not seen yet (the target itself is the real model's)."""

    def __init__(self, target: SpecBase, real: nn.Module, system: PluginSystem) -> None:
        self.target, self.system = target, system
        target_model = spec_to_dict(target)["model"]
        self._known = {self._key(target_model): _state_shapes(real)}

    @staticmethod
    def _key(model_fields: Mapping[str, Any]) -> str:
        return json.dumps(model_fields, sort_keys=True, default=str)

    def __call__(self, model_fields: Mapping[str, Any]) -> Shapes:
        key = self._key(model_fields)
        if key not in self._known:
            data = {**spec_to_dict(self.target), "model": dict(model_fields), "weights": None}
            spec, _ = validate_source(data, self.system.registry)  # fields only: a known spec
            with torch.device("meta"):
                self._known[key] = _state_shapes(build_from_spec(spec, system=self.system))
        return self._known[key]


def _state_shapes(model: nn.Module) -> Shapes:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _target_spec(
    src: WeightsSource,
    requested: SpecBase | None,
    source_data: Mapping[str, Any] | None,
    system: PluginSystem,
    overrides: Mapping[str, Any],
    trials: Trials = None,
) -> SpecBase:
    """The spec to build: the caller's, or the source's own (+ overrides); never ``weights:``."""
    if requested is None:
        if source_data is None:
            raise WeightsError(
                f"{src.location}: a {src.format} state dict does not say which model it holds; "
                f"name one (vitzoo build PRESET --weights ..., vitzoo convert --preset PRESET)"
            )
        requested = _resolve(source_data, src.location, system, overrides, trials)
    if getattr(requested, "weights", None) is not None:
        requested = requested.model_copy(update={"weights": None})
    return requested


def _caller_sets_head(spec: SpecSource, overrides: Mapping[str, Any], system: PluginSystem) -> bool:
    """Whether the caller chose the classifier (a class count or a head) themselves; a spec
    object counts as chosen whole (a training spec's classes are its data's)."""
    given = given_model_fields(spec, system.registry, overrides)
    return given is None or bool(given & set(HEAD_FIELDS))


def _head_from_source(
    requested: SpecBase,
    spec: SpecSource,
    source_data: Mapping[str, Any] | None,
    where: str,
    system: PluginSystem,
    overrides: Mapping[str, Any],
    note: Callable[[str], None],
    trials: Trials = None,
) -> SpecBase:
    """``requested`` with the source's class count and head, where the source says what they
    are and the caller set neither (one note when that changes the spec)."""
    source_model = (source_data or {}).get("model") or {}
    if source_model.get("type") != requested.model.type or "num_classes" not in source_model:
        return requested  # a family mismatch is reported by _check_source_model
    try:
        stored, _ = validate_source(source_data, system.registry)  # defaults filled in
    except SpecError:
        return requested  # reported with the stored spec's check
    theirs = spec_to_dict(stored)["model"]
    mine = spec_to_dict(requested)["model"]
    if all(theirs.get(f) == mine.get(f) for f in HEAD_FIELDS):
        return requested
    note(
        f"the head follows the weights: {theirs['num_classes']} outputs, head "
        f"{theirs['head'].get('type')!r} (the spec had {mine['num_classes']}, "
        f"{mine['head'].get('type')!r}; set num_classes to choose another)"
    )
    follow = {f"model.{f}": theirs[f] for f in HEAD_FIELDS}
    return _resolve(spec, where, system, {**overrides, **follow}, trials)


def _requested_spec(
    src: WeightsSource,
    spec: SpecSource | None,
    overrides: Mapping[str, Any],
    head_follows_source: bool | None,
    system: PluginSystem,
    note: Callable[[str], None],
    trials: Trials = None,
) -> tuple[SpecBase | None, dict[str, Any] | None, WeightConverter | None]:
    """(the caller's resolved spec, the source's spec mapping, the converter that gave it),
    the caller's classifier following the source's where they did not choose one."""
    requested = None if spec is None else _resolve(spec, src.location, system, overrides, trials)
    source_data, converter = source_spec(
        src, requested.model.type if requested is not None else None, system
    )
    if requested is not None and spec is not None:
        if head_follows_source is None:
            head_follows_source = not _caller_sets_head(spec, overrides, system)
        if head_follows_source:
            requested = _head_from_source(
                requested, spec, source_data, src.location, system, overrides, note, trials
            )
    return requested, source_data, converter


def _check_source_model(
    src: WeightsSource,
    source_data: Mapping[str, Any] | None,
    target: SpecBase,
    requested: bool,
    system: PluginSystem,
    note: Callable[[str], None],
) -> dict[str, Any]:
    """The source's model fields, after checking it is the target's family (and saying where
    the caller's spec departs from the one the weights were made for)."""
    source_model = dict(source_data["model"]) if source_data else {}
    target_model = spec_to_dict(target)["model"]
    if source_model and source_model.get("type") != target_model["type"]:
        raise WeightsError(
            f"{src.location}: this checkpoint holds a {source_model.get('type')!r} model, not "
            f"{target_model['type']!r}; build that family (or drop the preset)"
        )
    if requested and source_model:
        try:
            stored, _ = validate_source(source_data, system.registry)  # defaults filled in
        except SpecError as exc:
            raise WeightsError(
                f"{src.location}: the stored spec is not valid here:\n{exc}"
            ) from None
        differences = spec_differences(spec_to_dict(stored)["model"], target_model)
        if differences:
            note(
                f"note: these weights were made with {', '.join(differences[:6])}"
                f"{' ...' if len(differences) > 6 else ''}; the given spec wins"
            )
    return source_model


def _convert(
    src: WeightsSource,
    converter: WeightConverter | None,
    architecture: str,
    fitted_shapes: Shapes,
    system: PluginSystem,
) -> tuple[Conversion, WeightConverter | None, str]:
    """(conversion against the fitted shapes, the converter used (None: a vitzoo checkpoint),
    hint for load errors)."""
    if src.format == "vitzoo":
        return apply_rules(IDENTITY, src.tensors, fitted_shapes), None, ""
    kinds = SOURCE_KINDS_FOR_FORMAT.get(src.format, (src.format,))
    if converter is None:
        converter = pick_converter(
            architecture, kinds, src.tensors, src.config, system=system, where=src.location
        )
    elif architecture not in converter.architectures:
        raise WeightsError(
            f"{src.location}: converter {converter.name!r} fills "
            f"{', '.join(converter.architectures)}, not {architecture!r}"
        )
    hint = family_hint(architecture, kinds, src.tensors, src.config, system=system)
    return converter.convert(src.tensors, fitted_shapes), converter, hint


def _adapt_and_load(
    model: nn.Module,
    conversion: Conversion,
    fitted: Mapping[str, Any],
    target_model: Mapping[str, Any],
    shapes_of: _Shapes,
    how: tuple[WeightsSource, Sequence[str] | None, bool, str],
    note: Callable[[str], None],
) -> list[Any]:
    """Adapt the converted tensors from the model the checkpoint was made for to the target
    (classes, image size, channels; one note each), load them, and say what was left out.
    Returns the adaptation plans (the preprocessing follows them)."""
    src, class_names, strict, hint = how
    final_shapes = shapes_of(target_model)
    source_classes = preprocessing_of(src).class_names
    plans = plan_adaptations(fitted, target_model, shapes_of, (source_classes, class_names))
    initial = model.state_dict()
    apply_adaptations(
        conversion,
        plans,
        final_shapes,
        note,
        init=initial.__getitem__,
        resamplings=table_resamplings(model),
    )
    conversion.refit(final_shapes)
    load_converted(model, conversion, strict=strict, where=src.location, hint=hint)
    if conversion.other_tower:
        note(
            f"multimodal checkpoint: loaded its vision tower; {len(conversion.other_tower)} "
            f"tensors of its other tower(s) (text encoder, logit scale) left out"
        )
    if not strict:
        left = conversion.problems(final_shapes)
        if left:
            note(f"loaded what fits (strict=False); not loaded: {'; '.join(left)}")
    return plans


def _notes(notes: list[str], log: Callable[[str], None] | None) -> Callable[[str], None]:
    """Where each one-line note of a load goes: kept, logged, and shown -- to ``log`` (the
    command line prints it), else as a warning Python shows by default."""

    def note(line: str) -> None:
        notes.append(line)
        logger.info(line)
        if log is not None:
            log(line)
        else:
            warn(line, WeightsAdaptationWarning)

    return note


def load_pretrained(
    source: str | Path,
    spec: SpecSource | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    format: str | None = None,
    strict: bool = True,
    preprocessing: prep.Preprocessing | None = None,
    system: PluginSystem | None = None,
    log: Callable[[str], None] | None = None,
    head_follows_source: bool | None = None,
    class_names: Sequence[str] | None = None,
    macs: bool = False,
) -> Pretrained:
    """Build the model for ``spec`` (or the source's own spec) with the weights in ``source``.

    ``overrides`` (``num_classes=2``, ``image_size=384``, ``in_chans=1``...) change the target
    model; the weights are adapted to it, each adaptation said in one line: to ``log`` (the
    command line prints it), else as a :class:`~vitzoo.errors.WeightsAdaptationWarning`, which
    Python shows by default (a notebook user sees that the head was re-initialised). Where the
    caller set no class count (nor head) and the source says its own (a vitzoo, Hugging Face or
    timm hub checkpoint), the head follows the source instead of being re-initialised
    (``head_follows_source`` decides explicitly; by default, the spec's own fields and
    ``overrides`` are read for it: a spec object counts as setting everything).
    ``class_names`` are the target's classes in output order (a training folder's): where the
    source names its classes too, head rows are matched by name (:mod:`~vitzoo.weights.adapt`).
    ``macs=True``: the trial build of resolving the target counts MACs too (``.report``)."""
    system = system or get_plugin_system()
    notes: list[str] = []
    note = _notes(notes, log)
    src = read_source(source, format)
    overrides = overrides or {}
    trials: Trials = {} if macs else None
    requested, source_data, converter = _requested_spec(
        src, spec, overrides, head_follows_source, system, note, trials
    )
    target = _target_spec(src, requested, source_data, system, overrides, trials)
    source_model = _check_source_model(
        src, source_data, target, requested is not None, system, note
    )
    target_model = spec_to_dict(target)["model"]
    # The model the checkpoint was made for: the target with the source's adaptable fields.
    fitted = {k: source_model.get(k, v) if k in ADAPTABLE else v for k, v in target_model.items()}
    model = build_from_spec(target, system=system)
    shapes_of = _Shapes(target, model, system)
    fitted_shapes = shapes_of(fitted)
    conversion, used, hint = _convert(src, converter, target_model["type"], fitted_shapes, system)
    if strict:
        raise_for_problems(conversion, fitted_shapes, src.location, hint)
    if used is not None and used.assumes:
        note(used.assumption_note())
    plans = _adapt_and_load(
        model, conversion, fitted, target_model, shapes_of, (src, class_names, strict, hint), note
    )
    pre = _preprocessing(src, model, preprocessing, plans, class_names)
    model.vitzoo_spec = target
    model.vitzoo_preprocessing = pre
    name = used.name if used is not None else "vitzoo"
    report = None if trials is None else trials.get(id(target))
    return Pretrained(model, target, pre, conversion, src, name, notes, report)


def _preprocessing(
    src: WeightsSource,
    model: nn.Module,
    given: prep.Preprocessing | None,
    plans: list[Any],
    class_names: Sequence[str] | None,
) -> prep.Preprocessing:
    """The caller's preprocessing over the source's, at the built model's input size; the
    class names are the caller's when given, and are dropped when the head was re-initialised
    for another class count without them."""
    pre = (given or prep.Preprocessing()).merged(preprocessing_of(src))
    classes_changed = any(p.field == "num_classes" for p in plans)
    names = pre.class_names
    if class_names is not None:
        names = tuple(class_names)
    elif classes_changed:
        names = None
    return replace(
        pre,
        input_size=tuple(getattr(model, "input_size", ()) or ()) or pre.input_size,
        class_names=names,
    )


def convert_checkpoint(
    source: str | Path,
    output: str | Path,
    spec: SpecSource | None = None,
    **options: Any,
) -> Pretrained:
    """Load ``source`` and write a self-describing vitzoo checkpoint (weights + spec +
    preprocessing) to ``output``."""
    loaded = load_pretrained(source, spec, **options)
    save(loaded.model, output, metadata=loaded.metadata())
    return loaded
