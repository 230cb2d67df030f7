"""What model a weights source holds: its spec, the converter that reads it, its preprocessing.

A vitzoo checkpoint stores its spec; a Hugging Face or timm hub folder describes its model in
``config.json``, from which the family's converter derives a spec; a timm hub folder of a model
vitzoo has a preset for is that preset (its name is the preset's alias); a plain state dict says
nothing, so the caller must name the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vitzoo.errors import SpecError, WeightsError
from vitzoo.plugins import PluginSystem
from vitzoo.spec import spec_to_dict
from vitzoo.spec.sources import validate_source
from vitzoo.weights import preprocessing as prep
from vitzoo.weights.converter import WeightConverter
from vitzoo.weights.selection import converters_for
from vitzoo.weights.sources import PICKLE_SUFFIXES, WeightsSource, read_source


def hf_converter(
    src: WeightsSource, architecture: str | None, system: PluginSystem
) -> WeightConverter:
    """The Hugging Face converter for the folder's ``model_type`` (of ``architecture``'s family
    when the caller named one)."""
    model_type = str(src.config.get("model_type", ""))
    every = [c for c in converters_for(None, "hf", system=system) if model_type in c.config_names]
    found = [c for c in every if architecture is None or architecture in c.architectures]
    if found:
        return found[0]
    if every and architecture is not None:
        families = ", ".join(sorted({a for c in every for a in c.architectures}))
        raise WeightsError(
            f"{src.location}: this Hugging Face {model_type!r} model is a {families} checkpoint, "
            f"not {architecture!r}"
        )
    known = sorted({n for c in converters_for(None, "hf", system=system) for n in c.config_names})
    raise WeightsError(
        f"{src.location}: no converter for Hugging Face model_type {model_type!r}; "
        f"supported: {', '.join(known) or '(none)'}"
    )


def _from_hf(
    src: WeightsSource, architecture: str | None, system: PluginSystem
) -> tuple[dict[str, Any], WeightConverter]:
    converter = hf_converter(src, architecture, system)
    if converter.spec_from_config is None:
        raise WeightsError(
            f"{src.location}: converter {converter.name!r} cannot derive a spec from "
            f"config.json; pass a preset"
        )
    data = dict(converter.spec_from_config({**src.config, "_preprocessor": src.preprocessor}))
    size = prep.from_hf(src.config, src.preprocessor).input_size
    if size and "image_size" not in src.config and "model" in data:
        # Families whose config.json has no image size (CvT): the processor's says it.
        data["model"] = {**data["model"], "image_size": list(size[1:])}
    return data, converter


def _from_timm_hub(
    src: WeightsSource, system: PluginSystem
) -> tuple[dict[str, Any] | None, WeightConverter | None]:
    """A timm hub folder names its model (``architecture``): a converter may derive the spec
    from its config, or the name is a preset's alias. The class count comes from the config."""
    arch = str(src.config["architecture"])
    for converter in converters_for(None, "timm", system=system):
        derive = converter.spec_from_config
        if derive is not None and any(arch.startswith(n) for n in converter.config_names):
            return dict(derive(src.config)), converter
    registry = system.registry
    name = arch.split(".")[0]
    if ("preset", name) not in registry:
        return None, None
    data: dict[str, Any] = {"preset": registry.canonical("preset", name)}
    if "num_classes" in src.config:
        data["model"] = {"num_classes": int(src.config["num_classes"])}
    try:
        spec, _ = validate_source(data, registry)
    except SpecError as exc:  # say it is about these weights
        raise WeightsError(
            f"{src.location}: the spec for these weights is not valid here:\n{exc}"
        ) from None
    model = spec_to_dict(spec)["model"]
    owners = converters_for(model["type"], "timm", system=system)
    return {"model": model}, owners[0] if owners else None


def source_spec(
    src: WeightsSource, architecture: str | None, system: PluginSystem
) -> tuple[dict[str, Any] | None, WeightConverter | None]:
    """The source's own spec mapping (None when it has none) and the converter that gave it."""
    if src.format == "vitzoo":
        return src.stored_spec, None
    if src.format == "hf":
        return _from_hf(src, architecture, system)
    if src.config.get("architecture"):
        return _from_timm_hub(src, system)
    return None, None


def _preset_named_like(src: WeightsSource, system: PluginSystem) -> str | None:
    """The preset a plain state dict's file name names (``deit_small_patch16_224.pth``, timm's
    ``vit_small_patch16_224.augreg_in21k.safetensors``), if any: timm names are aliases."""
    stem = Path(src.location).name
    for suffix in (".safetensors", *PICKLE_SUFFIXES):
        stem = stem.removesuffix(suffix)
    registry = system.registry
    for name in (stem, stem.split(".")[0]):
        if ("preset", name) in registry:
            return registry.canonical("preset", name)
    return None


def model_of_source(
    source: str | Path, system: PluginSystem, *, format: str | None = None
) -> dict[str, Any]:
    """The ``model:`` section of the model a weights source holds, for a spec that gives none
    (``train.init_from`` alone, or a checkpoint given where a spec goes).

    Read without loading the weights wherever the format allows: a vitzoo checkpoint's stored
    spec, a Hugging Face / timm hub folder's ``config.json``, or -- for a plain state dict,
    which says nothing about its model -- the preset its file name is a timm name of.
    """
    src = read_source(source, format, tensors=False)
    data, _ = source_spec(src, None, system)
    if data is None:
        preset = _preset_named_like(src, system)
        if preset is not None:
            data = {"preset": preset}
    if data is None:
        raise WeightsError(
            f"{src.location}: a {src.format} state dict does not say which model it holds; "
            "name it next to train.init_from with `preset: NAME` (the preset these weights "
            "fill, e.g. deit-s) or a `model:` section"
        )
    if "model" not in data or "preset" in data:
        try:
            spec, _ = validate_source(data, system.registry)
        except SpecError as exc:
            raise WeightsError(
                f"{src.location}: the spec for these weights is not valid here:\n{exc}"
            ) from None
        return spec_to_dict(spec)["model"]
    return dict(data["model"])


def preprocessing_of(src: WeightsSource) -> prep.Preprocessing:
    """How the source's model expects its inputs, as far as the source says."""
    if src.format == "vitzoo":
        return prep.Preprocessing.from_metadata(src.metadata)
    if src.format == "hf":
        return prep.from_hf(src.config, src.preprocessor)
    cfg = src.config.get("pretrained_cfg")
    return prep.from_timm(cfg, src.config) if isinstance(cfg, Mapping) else prep.Preprocessing()
