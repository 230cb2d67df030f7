"""Which registered converter reads a checkpoint into a model, and the one-call foreign load.

``load_state_dict(model, tensors, source="timm")`` is what tests and the loaders call: it maps
``tensors`` through the model family's converter and loads them, raising one
:class:`~vitzoo.errors.WeightsError` that lists every unmatched key on both sides and every shape
mismatch (with both shapes). ``strict=False`` loads what fits and returns the account of the rest.

Choosing: the converters registered for the model's architecture are the candidates -- the
user named the model, so another family's converter is never chosen behind their back. The
first one (source kinds in order of preference) that recognises the checkpoint is used; when
none does, the one candidate of the first kind that has exactly one is (strict accounting then
names every tensor that does not fit). So a plain ``.pth`` file in an official release's layout
finds the official converter even where the family also has a timm one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vitzoo.errors import WeightsError
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.weights.converter import Conversion, WeightConverter, load_converted, target_shapes


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
    """The converter for ``architecture`` that reads ``tensors`` (see the module doc); a plain
    error when there is none, naming the family the checkpoint looks like if another
    converter recognises it."""
    config = config or {}
    sources = (source,) if isinstance(source, str) else tuple(source)
    kinds = "/".join(sources)
    for kind in sources:  # in order of preference: the first converter that recognises it
        own = converters_for(architecture, kind, system=system)
        recognised = [c for c in own if c.recognises(tensors, config)]
        if recognised:
            return recognised[0]
    for kind in sources:  # none does: the one candidate of the first kind that has one
        own = converters_for(architecture, kind, system=system)
        if len(own) == 1:
            return own[0]
    own = [c for s in sources for c in converters_for(architecture, s, system=system)]
    looks_like = family_hint(architecture, sources, tensors, config, system=system)
    if not own:
        raise WeightsError(
            f"{where}: no {kinds} converter is registered for {architecture!r}{looks_like}; "
            f"`vitzoo list --kind converter` shows what can be loaded"
        )
    sample = ", ".join(list(tensors)[:4])
    raise WeightsError(
        f"{where}: none of the {kinds} converters for {architecture!r} "
        f"({', '.join(c.name for c in own)}) recognises this checkpoint (its keys start: "
        f"{sample}){looks_like}"
    )


def family_hint(
    architecture: str,
    sources: tuple[str, ...],
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | None = None,
    *,
    system: PluginSystem | None = None,
) -> str:
    """``"; it looks like cait (converter 'timm-cait'), not 'vit'; build that family"`` when
    another family's converter recognises the checkpoint, else ``""`` (added to load errors)."""
    others = [
        c
        for s in sources
        for c in converters_for(None, s, system=system)
        if architecture not in c.architectures and c.recognises(tensors, config or {})
    ]
    if not others:
        return ""
    families = ", ".join(sorted({a for c in others for a in c.architectures}))
    return (
        f"; it looks like {families} (converter {others[0].name!r}), not {architecture!r}: "
        "build that family instead"
    )


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
        hint = family_hint(spec.model.type, (source,), tensors, config, system=system)
    else:
        hint = ""
    conversion = converter.convert(tensors, target_shapes(model))
    return load_converted(model, conversion, strict=strict, where=where, hint=hint)
