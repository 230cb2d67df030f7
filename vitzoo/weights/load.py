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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.builder import SpecSource, build_from_spec, resolve_spec
from vitzoo.checkpoint import save
from vitzoo.components.resample import table_resamplings
from vitzoo.errors import SpecError, WeightsError
from vitzoo.formats import WEIGHTS_CONVERTER_KEY, WEIGHTS_SOURCE_KEY
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.spec import SpecBase, spec_to_dict
from vitzoo.spec.sources import validate_source
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


def _resolve(data: Any, where: str, system: PluginSystem, overrides: Mapping[str, Any]) -> SpecBase:
    """The fully resolved spec (validation, rules, trial build) of the model to build."""
    try:
        return resolve_spec(data, overrides, system=system)
    except SpecError as exc:
        raise WeightsError(
            f"{where}: the spec for these weights is not valid here:\n{exc}"
        ) from None


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
) -> SpecBase:
    """The spec to build: the caller's, or the source's own (+ overrides); never ``weights:``."""
    if requested is None:
        if source_data is None:
            raise WeightsError(
                f"{src.location}: a {src.format} state dict does not say which model it holds; "
                f"name one (vitzoo build PRESET --weights ..., vitzoo convert --preset PRESET)"
            )
        requested = _resolve(source_data, src.location, system, overrides)
    if getattr(requested, "weights", None) is not None:
        requested = requested.model_copy(update={"weights": None})
    return requested


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
) -> tuple[Conversion, str, str]:
    """(conversion against the fitted shapes, converter name, hint for load errors)."""
    if src.format == "vitzoo":
        return apply_rules(IDENTITY, src.tensors, fitted_shapes), "vitzoo", ""
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
    return converter.convert(src.tensors, fitted_shapes), converter.name, hint


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
) -> Pretrained:
    """Build the model for ``spec`` (or the source's own spec) with the weights in ``source``.

    ``overrides`` (``num_classes=2``, ``image_size=384``, ``in_chans=1``...) change the target
    model; the weights are adapted to it, each adaptation logged in one line.
    """
    system = system or get_plugin_system()
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        (log or logger.info)(line)

    src = read_source(source, format)
    requested = None if spec is None else _resolve(spec, src.location, system, overrides or {})
    source_data, converter = source_spec(
        src, requested.model.type if requested is not None else None, system
    )
    target = _target_spec(src, requested, source_data, system, overrides or {})
    source_model = _check_source_model(
        src, source_data, target, requested is not None, system, note
    )
    target_model = spec_to_dict(target)["model"]
    # The model the checkpoint was made for: the target with the source's adaptable fields.
    fitted = {k: source_model.get(k, v) if k in ADAPTABLE else v for k, v in target_model.items()}
    model = build_from_spec(target, system=system)
    shapes_of = _Shapes(target, model, system)
    fitted_shapes = shapes_of(fitted)
    conversion, name, hint = _convert(src, converter, target_model["type"], fitted_shapes, system)
    if strict:
        raise_for_problems(conversion, fitted_shapes, src.location, hint)
    final_shapes = shapes_of(target_model)
    plans = plan_adaptations(fitted, target_model, shapes_of)
    apply_adaptations(conversion, plans, final_shapes, note, table_resamplings(model))
    conversion.refit(final_shapes)
    load_converted(model, conversion, strict=strict, where=src.location, hint=hint)
    if not strict:
        left = conversion.problems(final_shapes)
        if left:
            note(f"loaded what fits (strict=False); not loaded: {'; '.join(left)}")
    pre = _preprocessing(src, model, preprocessing, plans)
    model.vitzoo_spec = target
    model.vitzoo_preprocessing = pre
    return Pretrained(model, target, pre, conversion, src, name, notes)


def _preprocessing(
    src: WeightsSource, model: nn.Module, given: prep.Preprocessing | None, plans: list[Any]
) -> prep.Preprocessing:
    """The caller's preprocessing over the source's, at the built model's input size; class
    names are dropped when the head was re-initialised for another class count."""
    pre = (given or prep.Preprocessing()).merged(preprocessing_of(src))
    classes_changed = any(p.field == "num_classes" for p in plans)
    return replace(
        pre,
        input_size=tuple(getattr(model, "input_size", ()) or ()) or pre.input_size,
        class_names=None if classes_changed else pre.class_names,
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


def fine_tune_start(
    spec: SpecBase, *, system: PluginSystem | None = None, log: Callable[[str], None] | None = None
) -> tuple[SpecBase, nn.Module]:
    """``train.init_from``: the model for ``spec`` started from that source, and the spec with
    the weights' normalisation / eval crop wherever it keeps vitzoo's defaults."""
    loaded = load_pretrained(spec.train.init_from, spec, system=system, log=log)
    updates = prep.data_overrides(loaded.preprocessing, spec.data)
    if updates:
        spec = spec.model_copy(update={"data": spec.data.model_copy(update=updates)})
        (log or logger.info)(
            "data normalisation from the weights: "
            + ", ".join(f"data.{k}={v}" for k, v in updates.items())
        )
    loaded.model.vitzoo_spec = spec
    return spec, loaded.model
