"""Pick the registered converter for a model and a source kind, and load foreign tensors strictly.

``load_state_dict(model, tensors, source="timm")`` is what tests and the loaders call: it maps
``tensors`` through the model family's converter and loads them, raising one
:class:`~vitzoo.weights.errors.WeightsError` that lists every unmatched key on both sides and
every shape mismatch (with both shapes). ``strict=False`` loads what fits and returns the
account of the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.weights.converter import Conversion, WeightConverter
from vitzoo.weights.errors import WeightsError


def converters_for(
    architecture: str | None = None,
    source: str | None = None,
    *,
    system: PluginSystem | None = None,
) -> list[WeightConverter]:
    """Registered converters filling ``architecture`` from ``source`` (either may be None = any)."""
    registry = (system or get_plugin_system()).registry
    return [
        c
        for c in registry.entries("converter")
        if (architecture is None or architecture in c.architectures)
        and (source is None or c.source == source)
    ]


def pick_converter(
    architecture: str,
    source: str | tuple[str, ...],
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | None = None,
    *,
    system: PluginSystem | None = None,
    where: str = "checkpoint",
) -> WeightConverter:
    """The converter for ``architecture`` that recognises ``tensors``; a plain error otherwise,
    naming the family the checkpoint does look like when another converter recognises it."""
    config = config or {}
    sources = (source,) if isinstance(source, str) else tuple(source)
    own = [c for s in sources for c in converters_for(architecture, s, system=system)]
    for converter in own:
        if converter.recognises(tensors, config):
            return converter
    others = [
        c
        for s in sources
        for c in converters_for(None, s, system=system)
        if architecture not in c.architectures and c.recognises(tensors, config)
    ]
    kinds = "/".join(sources)
    if others:
        families = ", ".join(sorted({a for c in others for a in c.architectures}))
        raise WeightsError(
            f"{where}: this {kinds} checkpoint looks like {families} (converter "
            f"{others[0].name!r}), not {architecture!r}; build that family instead"
        )
    if not own:
        raise WeightsError(
            f"{where}: no {kinds} converter is registered for {architecture!r}; "
            f"`vitzoo list --kind converter` shows what can be loaded"
        )
    sample = ", ".join(list(tensors)[:4])
    raise WeightsError(
        f"{where}: the {kinds} converter(s) {', '.join(c.name for c in own)} do not recognise "
        f"this checkpoint (its keys start: {sample}); is it another family's checkpoint?"
    )


def target_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def raise_for_problems(conversion: Conversion, shapes: Mapping[str, Any], where: str) -> None:
    problems = conversion.problems(shapes)
    if problems:
        raise WeightsError(f"{where}: weights do not match the model; " + "; ".join(problems))


def load_converted(
    model: nn.Module,
    conversion: Conversion,
    *,
    strict: bool = True,
    where: str = "checkpoint",
) -> Conversion:
    """Load already-converted tensors, strictly (every tensor, both sides) unless told not to."""
    shapes = target_shapes(model)
    if strict:
        raise_for_problems(conversion, shapes, where)
    fitting = {
        k: v
        for k, v in conversion.tensors.items()
        if k in shapes and tuple(v.shape) == tuple(shapes[k])
    }
    own = model.state_dict()
    with torch.no_grad():
        for key, tensor in fitting.items():
            own[key].copy_(tensor.to(dtype=own[key].dtype))
    return conversion


def load_state_dict(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    *,
    source: str = "timm",
    converter: WeightConverter | None = None,
    config: Mapping[str, Any] | None = None,
    strict: bool = True,
    system: PluginSystem | None = None,
    where: str = "checkpoint",
) -> Conversion:
    """Convert ``tensors`` (timm / HF / official key names) into ``model`` and load them.

    The converter is the registered one for ``model``'s architecture and ``source`` unless given.
    Returns the :class:`Conversion` (what was used, left unused by design, kept at init).
    """
    spec = getattr(model, "vitzoo_spec", None)
    if converter is None:
        if spec is None:
            raise WeightsError(f"{where}: the model was not built by vitzoo (no vitzoo_spec)")
        converter = pick_converter(
            spec.model.type, source, tensors, config, system=system, where=where
        )
    shapes = target_shapes(model)
    conversion = converter.convert(tensors, shapes)
    return load_converted(model, conversion, strict=strict, where=where)
