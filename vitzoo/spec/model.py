"""The root spec class of a registry, and the JSON Schema editors complete spec files from.

``spec_model(registry)`` is built once per registry version: ``model`` is the union of every
registered architecture config, ``objective`` of every objective, ``train`` / ``data`` /
``weights`` are fixed sections. It expands a ``preset:`` before validating. Whether the chosen
objective suits the chosen architecture is a whole-spec rule (:mod:`vitzoo.rules`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from vitzoo.registry import Registry
from vitzoo.spec.overrides import expand_preset
from vitzoo.spec.sections import DataConfig, TrainConfig, WeightsSection
from vitzoo.spec.unions import registry_version, resolver


class SpecBase(BaseModel):
    """Root of a spec file. ``model`` is required; the rest is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _root_fields(registry: Registry) -> dict[str, Any]:
    """The root sections, with ``model`` / ``objective`` typed as the registered unions."""
    res = resolver(registry)
    fields: dict[str, Any] = {
        "preset": (
            str | None,
            Field(default=None, description="Start from this registered preset."),
        ),
        "model": (res.union("architecture"), Field(description="The architecture and its parts.")),
    }
    if registry.names("objective"):
        fields["objective"] = (
            res.union("objective") | None,  # type: ignore[operator]
            Field(
                default=None, description="Training objective (see `vitzoo list --kind objective`)."
            ),
        )
    fields["train"] = (
        TrainConfig,
        Field(default_factory=TrainConfig, description="Optimisation settings (`vitzoo train`)."),
    )
    fields["data"] = (
        DataConfig,
        Field(default_factory=DataConfig, description="Dataset layout and augmentation."),
    )
    fields["weights"] = (
        WeightsSection | None,
        Field(
            default=None,
            description="Start from pretrained weights (vitzoo/timm/Hugging Face source).",
        ),
    )
    return fields


def spec_model(registry: Registry) -> type[SpecBase]:
    """The root spec class for ``registry`` (built once per registry version)."""
    cached = getattr(registry, "_vitzoo_spec_model", None)
    version = registry_version(registry)
    if cached is not None and getattr(cached, "_vitzoo_registry_version", None) == version:
        return cached

    def _expand(cls: type, data: Any) -> Any:
        if isinstance(data, Mapping):
            return expand_preset(registry, data)
        return data

    validators = {"expand_preset": model_validator(mode="before")(classmethod(_expand))}
    model = create_model(
        "Spec", __base__=SpecBase, __validators__=validators, **_root_fields(registry)
    )
    model._vitzoo_registry_version = version  # type: ignore[attr-defined]
    registry._vitzoo_spec_model = model  # type: ignore[attr-defined]
    return model


def spec_json_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a spec file, accepting what :func:`validate_spec` accepts.

    Pydantic's schema of the root model requires ``model`` with a ``type``; a spec that starts
    from a ``preset:`` needs neither (the preset supplies them, ``model:`` only overrides), so
    the schema says: without ``preset``, ``model`` is required and is one registered
    architecture; with it, ``model`` is any mapping of overrides.
    """
    schema = spec_model(registry).model_json_schema()
    props = schema["properties"]
    union = {k: v for k, v in props["model"].items() if k != "description"}
    props["model"] = {
        "description": "The architecture and its parts (with `preset:`, only what changes).",
        "anyOf": [union, {"type": "object"}],
    }
    presets = registry.names("preset")
    if presets:
        props["preset"] = {**props["preset"], "examples": presets}
    schema["required"] = [r for r in schema.get("required", []) if r != "model"]
    schema["allOf"] = [
        {
            "if": {"not": {"required": ["preset"]}},
            "then": {"required": ["model"], "properties": {"model": union}},
        },
        {
            "if": {"required": ["preset"], "properties": {"preset": {"type": "null"}}},
            "then": {"required": ["model"], "properties": {"model": union}},
        },
    ]
    return schema
