"""Spec -> nn.Module: the only place that turns specs into modules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.spec import (
    SpecBase,
    SpecError,
    SpecIssue,
    apply_overrides,
    blame_overrides,
    is_spec_file_name,
    read_spec_file,
    spec_to_dict,
    validate_spec,
)
from vitzoo.suggest import did_you_mean

SpecSource = SpecBase | Mapping[str, Any] | str | Path


def resolve_spec(
    source: SpecSource,
    overrides: Mapping[str, Any] | None = None,
    *,
    system: PluginSystem | None = None,
    sources: Mapping[str, str] | None = None,
) -> SpecBase:
    """Turn a spec object, mapping, preset name or YAML path (+ overrides) into a valid spec.

    A problem in an overridden field is blamed on the override, not on the file: ``sources``
    names where each override came from (``{"train.lr": "--set train.lr=-1"}``); by default the
    override itself is named.
    """
    system = system or get_plugin_system()
    registry = system.registry
    failed = [r.name for r in system.failed]
    file, text = "<spec>", None
    if isinstance(source, SpecBase):
        if not overrides:
            return source
        data: Any = spec_to_dict(source)
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        if path.is_file() or isinstance(source, Path) or is_spec_file_name(path):
            file = str(path)
            text, data = read_spec_file(path)
        elif ("preset", str(source)) in registry:
            data = {"preset": str(source)}
        else:
            presets = ", ".join(registry.names("preset")) or "(none)"
            hint = did_you_mean(str(source), [*registry.names("preset"), *registry.aliases()])
            raise SpecError(
                [
                    SpecIssue(
                        "",
                        f"{source!r} is neither a spec file nor a registered preset{hint}; "
                        f"presets: {presets}",
                    )
                ]
            )
    data = apply_overrides(data, overrides)
    try:
        return validate_spec(registry, data, file=file, text=text, failed_plugins=failed)
    except SpecError as exc:
        raise blame_overrides(exc, overrides or {}, sources or {}) from None


def build_from_spec(spec: SpecBase, *, system: PluginSystem | None = None) -> nn.Module:
    """Build the model a validated spec describes; the spec is kept on ``model.vitzoo_spec``."""
    system = system or get_plugin_system()
    entry = system.registry.get("architecture", spec.model.type)
    model = entry.factory(spec.model, BuildContext(registry=system.registry))
    model.vitzoo_spec = spec
    return model


def build(
    source: SpecSource | None = None,
    *,
    weights: str | Path | None = None,
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
    own spec is used) and the weights adapt to overridden classes / image size / channels.
    ``features_only=True`` gives a backbone for dense prediction instead
    (:class:`~vitzoo.components.features.FeatureExtractor`): ``forward(x)`` returns the
    (B, C, H, W) maps of the ``out_indices`` layers (an int: the last n; default: all),
    ``feature_info`` describes them, unused tail layers and the head are gone.
    """
    if out_indices is not None and not features_only:
        raise TypeError("out_indices selects feature maps; pass features_only=True with it")
    model = _build_model(source, weights, system, overrides)
    if not features_only:
        return model
    from vitzoo.components.features import FeatureExtractor

    return FeatureExtractor(model, out_indices)


def _build_model(
    source: SpecSource | None,
    weights: str | Path | None,
    system: PluginSystem | None,
    overrides: Mapping[str, Any],
) -> nn.Module:
    if source is None and weights is None:
        raise TypeError("build() needs a preset, spec or weights source")
    spec = None if source is None else resolve_spec(source, overrides, system=system)
    section = getattr(spec, "weights", None) if spec is not None else None
    if weights is None and section is None:
        return build_from_spec(spec, system=system)
    from vitzoo.weights.load import load_pretrained

    return load_pretrained(
        weights if weights is not None else section.source,
        spec,
        overrides=overrides if spec is None else None,
        format=None if weights is not None else section.format,
        strict=True if weights is not None else section.strict,
        system=system,
    ).model


def current_spec(model: nn.Module) -> SpecBase:
    """The model's spec, updated for changes made after building (e.g. ``reset_classifier``)."""
    spec = getattr(model, "vitzoo_spec", None)
    if spec is None:
        raise ValueError("this model was not built by vitzoo (it has no vitzoo_spec)")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and getattr(spec.model, "num_classes", num_classes) != num_classes:
        spec = spec.model_copy(
            update={"model": spec.model.model_copy(update={"num_classes": num_classes})}
        )
    return spec
