"""Build a vitzoo model from any weights source: the one path every entry point goes through.

``vitzoo.build(P, weights=S)``, a spec's ``weights:`` section, ``vitzoo build --weights``,
``vitzoo convert`` and ``train.init_from`` all call :func:`load_pretrained`:

1. read the source (:mod:`~vitzoo.weights.sources`) and find its spec: stored (vitzoo), derived
   from ``config.json`` by the converter (Hugging Face, timm hub folders), or the one the caller
   names (plain timm / official state dicts say nothing about their model);
2. the *target* spec is the caller's (preset / spec + overrides) or the source's + overrides;
3. convert against a meta-device build of the target with the source's class count, image size
   and channels (strict accounting of every tensor), then adapt to the target
   (:mod:`~vitzoo.weights.adapt`) and load into the real model;
4. carry preprocessing (mean/std, interpolation, crop, input size, class names) along.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.builder import SpecSource, build_from_spec, resolve_spec
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.spec import SpecBase, SpecError, spec_to_dict
from vitzoo.weights import preprocessing as prep
from vitzoo.weights.adapt import ADAPTABLE, apply_adaptations, plan_adaptations
from vitzoo.weights.apply import converters_for, load_converted, pick_converter, raise_for_problems
from vitzoo.weights.converter import Conversion, WeightConverter, apply_rules
from vitzoo.weights.errors import WeightsError
from vitzoo.weights.rules import Rename
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
            "vitzoo.weights.source": self.source.location,
            "vitzoo.weights.converter": self.converter,
        }


def _hf_converter(
    src: WeightsSource, architecture: str | None, system: PluginSystem
) -> WeightConverter:
    model_type = str(src.config.get("model_type", ""))
    found = [
        c for c in converters_for(architecture, "hf", system=system) if model_type in c.config_names
    ]
    if found:
        return found[0]
    others = [c for c in converters_for(None, "hf", system=system) if model_type in c.config_names]
    if others and architecture is not None:
        families = ", ".join(sorted({a for c in others for a in c.architectures}))
        raise WeightsError(
            f"{src.location}: this Hugging Face {model_type!r} model is a {families} checkpoint, "
            f"not {architecture!r}"
        )
    known = sorted({n for c in converters_for(None, "hf", system=system) for n in c.config_names})
    raise WeightsError(
        f"{src.location}: no converter for Hugging Face model_type {model_type!r}; "
        f"supported: {', '.join(known) or '(none)'}"
    )


def _timm_hub_converter(src: WeightsSource, system: PluginSystem) -> WeightConverter | None:
    arch = str(src.config.get("architecture", ""))
    for c in converters_for(None, "timm", system=system):
        if c.spec_from_config and any(arch.startswith(n) for n in c.config_names):
            return c
    return None


def _source_spec(
    src: WeightsSource, architecture: str | None, system: PluginSystem
) -> tuple[dict[str, Any] | None, WeightConverter | None]:
    """The source's own spec mapping (None when it has none) and the converter that gave it."""
    if src.format == "vitzoo":
        return src.stored_spec, None
    if src.format == "hf":
        converter = _hf_converter(src, architecture, system)
        if converter.spec_from_config is None:
            raise WeightsError(
                f"{src.location}: converter {converter.name!r} cannot derive a spec from "
                f"config.json; pass a preset"
            )
        config = {**src.config, "_preprocessor": src.preprocessor}
        data = dict(converter.spec_from_config(config))
        size = prep.from_hf(src.config, src.preprocessor).input_size
        if size and "image_size" not in src.config and "model" in data:
            # Families whose config.json has no image size (CvT): the processor's says it.
            data["model"] = {**data["model"], "image_size": list(size[1:])}
        return data, converter
    if src.config.get("architecture"):
        converter = _timm_hub_converter(src, system)
        if converter is not None and converter.spec_from_config is not None:
            return dict(converter.spec_from_config(src.config)), converter
        return _timm_preset_spec(src, system)
    return None, None


def _timm_preset_spec(
    src: WeightsSource, system: PluginSystem
) -> tuple[dict[str, Any] | None, WeightConverter | None]:
    """A timm hub folder names its model (``architecture``); a converter's ``equivalents`` say
    which vitzoo preset that is. The class count comes from the folder's config."""
    arch = str(src.config["architecture"]).split(".")[0]
    for converter in converters_for(None, "timm", system=system):
        for preset, name in converter.equivalents:
            if name == arch:
                data: dict[str, Any] = {"preset": preset}
                if "num_classes" in src.config:
                    data["model"] = {"num_classes": int(src.config["num_classes"])}
                spec = _validate(data, src.location, system, {})
                return {"model": spec_to_dict(spec)["model"]}, converter
    return None, None


def _meta_shapes(
    base: SpecBase, model_fields: Mapping[str, Any], system: PluginSystem
) -> dict[str, tuple[int, ...]]:
    data = spec_to_dict(base)
    data["model"] = dict(model_fields)
    data["weights"] = None
    spec = resolve_spec(data, system=system)
    with torch.device("meta"):
        model = build_from_spec(spec, system=system)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _preprocessing_of(src: WeightsSource) -> prep.Preprocessing:
    if src.format == "vitzoo":
        return prep.Preprocessing.from_metadata(src.metadata)
    if src.format == "hf":
        return prep.from_hf(src.config, src.preprocessor)
    cfg = src.config.get("pretrained_cfg")
    return prep.from_timm(cfg, src.config) if isinstance(cfg, Mapping) else prep.Preprocessing()


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


def _validate(
    data: Any, where: str, system: PluginSystem, overrides: Mapping[str, Any]
) -> SpecBase:
    try:
        return resolve_spec(data, overrides, system=system)
    except SpecError as exc:
        raise WeightsError(
            f"{where}: the spec for these weights is not valid here:\n{exc}"
        ) from None


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
    where = src.location
    requested = None if spec is None else _validate(spec, where, system, overrides or {})
    source_data, converter = _source_spec(
        src, requested.model.type if requested is not None else None, system
    )
    if requested is None:
        if source_data is None:
            raise WeightsError(
                f"{where}: a {src.format} state dict does not say which model it holds; "
                f"name one (vitzoo build PRESET --weights ..., vitzoo convert --preset PRESET)"
            )
        target = _validate(source_data, where, system, overrides or {})
    else:
        target = requested
    target = target.model_copy(update={"weights": None}) if hasattr(target, "weights") else target

    source_model = dict(source_data["model"]) if source_data else {}
    target_model = spec_to_dict(target)["model"]
    if source_model and source_model.get("type") != target_model["type"]:
        raise WeightsError(
            f"{where}: this checkpoint holds a {source_model.get('type')!r} model, not "
            f"{target_model['type']!r}; build that family (or drop the preset)"
        )
    if requested is not None and source_model:
        resolved_source = spec_to_dict(_validate(source_data, where, system, {}))["model"]
        differences = spec_differences(resolved_source, target_model)
        if differences:
            note(
                f"note: these weights were made with {', '.join(differences[:6])}"
                f"{' ...' if len(differences) > 6 else ''}; the given spec wins"
            )
    # The model the checkpoint was made for: the target with the source's adaptable fields.
    fitted = dict(target_model)
    for name in ADAPTABLE:
        if name in source_model and name in fitted:
            fitted[name] = source_model[name]

    def shapes_of(model_fields: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        return _meta_shapes(target, model_fields, system)

    fitted_shapes = shapes_of(fitted)
    if src.format == "vitzoo":
        rules, name = IDENTITY, "vitzoo"
        conversion = apply_rules(rules, src.tensors, fitted_shapes)
    else:
        if converter is None:
            kinds = SOURCE_KINDS_FOR_FORMAT.get(src.format, (src.format,))
            converter = pick_converter(
                target_model["type"], kinds, src.tensors, src.config, system=system, where=where
            )
        elif target_model["type"] not in converter.architectures:
            raise WeightsError(
                f"{where}: converter {converter.name!r} fills {', '.join(converter.architectures)}"
                f", not {target_model['type']!r}"
            )
        name = converter.name
        conversion = converter.convert(src.tensors, fitted_shapes)
    if strict:
        raise_for_problems(conversion, fitted_shapes, where)

    model = build_from_spec(target, system=system)
    final_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    plans = plan_adaptations(fitted, target_model, shapes_of)
    apply_adaptations(conversion, plans, final_shapes, note)
    conversion.refit(final_shapes)
    load_converted(model, conversion, strict=strict, where=where)
    if not strict:
        left = conversion.problems(final_shapes)
        if left:
            note(f"loaded what fits (strict=False); not loaded: {'; '.join(left)}")

    pre = (preprocessing or prep.Preprocessing()).merged(_preprocessing_of(src))
    classes_changed = any(p.field == "num_classes" for p in plans)
    pre = replace(
        pre,
        input_size=tuple(getattr(model, "input_size", ()) or ()) or pre.input_size,
        class_names=None if classes_changed else pre.class_names,
    )
    model.vitzoo_spec = target
    model.vitzoo_preprocessing = pre
    return Pretrained(model, target, pre, conversion, src, name, notes)


def convert_checkpoint(
    source: str | Path,
    output: str | Path,
    spec: SpecSource | None = None,
    **options: Any,
) -> Pretrained:
    """Load ``source`` and write a self-describing vitzoo checkpoint (weights + spec +
    preprocessing) to ``output``."""
    from vitzoo.checkpoint import save

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
