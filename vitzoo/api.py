"""The public entry point ``vitzoo.build``: a model from a preset, spec or weights source.

It sits above the builder and the weight loaders because it offers both: a spec is resolved and
built by :mod:`vitzoo.builder`; a spec with weights (``weights=`` or a ``weights:`` section) goes
through :func:`vitzoo.weights.load.load_pretrained`, which resolves and builds it the same way and
then loads and adapts the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from vitzoo.builder import SpecSource, build_from_spec, resolve_spec
from vitzoo.components.features import FeatureExtractor
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.spec.sources import given_model_fields
from vitzoo.weights.load import HEAD_FIELDS, load_pretrained
from vitzoo.weights.named import NamedWeights, default_weights, load_named, named_weights
from vitzoo.weights.sources import is_weights_source


def build(
    source: SpecSource | None = None,
    *,
    weights: str | Path | None = None,
    pretrained: bool = False,
    system: PluginSystem | None = None,
    features_only: bool = False,
    out_indices: int | list[int] | tuple[int, ...] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a model from a preset name, YAML path, mapping or spec, with field overrides.

    ``vitzoo.build("deit-s", num_classes=10)`` sets ``model.num_classes``; dotted keys such as
    ``**{"model.patch.patch_size": 8}`` reach nested fields. ``weights=`` (or a spec's
    ``weights:`` section) starts from pretrained weights: a vitzoo or timm checkpoint, a Hugging
    Face model folder or ``hf-hub:ORG/NAME``; ``source`` may then be left out (the weights'
    own spec is used), or be the weights themselves (``vitzoo.build("ckpt.safetensors")``), and
    the weights adapt to overridden classes / image size / channels. Where neither the spec nor
    the overrides set ``num_classes`` (or ``head``) and the weights say theirs, the head follows
    the weights (as timm's ``pretrained_cfg`` does). Named releases: ``build("vit-s16",
    pretrained=True)`` takes the preset's default weights tag, ``build("vit-s16.augreg-in21k-
    ft-in1k")`` (or timm's spelling ``"vit_small_patch16_224.augreg_in21k_ft_in1k"``) a named one
    (:mod:`vitzoo.weights.named`).
    ``features_only=True`` gives a backbone for dense prediction instead
    (:class:`~vitzoo.components.features.FeatureExtractor`): ``forward(x)`` returns the
    (B, C, H, W) maps of the ``out_indices`` layers (an int: the last n; default: all),
    ``feature_info`` describes them, unused tail layers and the head are gone.
    """
    if out_indices is not None and not features_only:
        raise TypeError("out_indices selects feature maps; pass features_only=True with it")
    named = _named_release(source, pretrained, weights, system)
    if named is not None:
        model = load_named(named, overrides, system=system).model
    else:
        model = _build_model(source, weights, system, overrides)
    return FeatureExtractor(model, out_indices) if features_only else model


def _named_release(
    source: SpecSource | None,
    pretrained: bool,
    weights: str | Path | None,
    system: PluginSystem | None,
) -> NamedWeights | None:
    """The tagged release ``source`` names (``PRESET.TAG``), or the preset's default one when
    ``pretrained``; None for everything else."""
    registry = (system or get_plugin_system()).registry
    if pretrained:
        if weights is not None:
            raise TypeError("pass either pretrained=True or weights=, not both")
        if not isinstance(source, str):
            raise TypeError("pretrained=True takes a preset name (or PRESET.TAG)")
        return default_weights(source, registry)
    return named_weights(source, registry) if weights is None else None


def _build_model(
    source: SpecSource | None,
    weights: str | Path | None,
    system: PluginSystem | None,
    overrides: Mapping[str, Any],
) -> nn.Module:
    if source is None and weights is None:
        raise TypeError("build() needs a preset, spec or weights source")
    if weights is None and isinstance(source, str | Path) and is_weights_source(source):
        source, weights = None, source  # a checkpoint where the spec goes: it is the spec
    if weights is not None:
        # the loader resolves the caller's spec once, and reads from it whether the caller set
        # a class count (if not, the head follows the weights)
        return load_pretrained(weights, source, overrides=overrides, system=system).model
    spec = resolve_spec(source, overrides, system=system)
    section = getattr(spec, "weights", None)
    if section is None:
        return build_from_spec(spec, system=system)
    registry = (system or get_plugin_system()).registry
    given = given_model_fields(source, registry, overrides)
    return load_pretrained(
        section.source,
        spec,
        format=section.format,
        strict=section.strict,
        system=system,
        head_follows_source=given is not None and not given & set(HEAD_FIELDS),
    ).model
