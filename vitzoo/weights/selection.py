"""Which registered converter reads a checkpoint into a model, and the one-call foreign load.

``load_state_dict(model, tensors, source="timm")`` is what tests and the loaders call: it maps
``tensors`` through the model family's converter and loads them, raising one
:class:`~vitzoo.errors.WeightsError` that lists every unmatched key on both sides and every shape
mismatch (with both shapes). ``strict=False`` loads what fits and returns the account of the rest.

Choosing: the converters registered for the model's architecture are the candidates -- the
user named the model, so another family's converter is never chosen behind their back. Among
them, one that recognises the checkpoint wins, source kinds in the order given (a plain state
dict file may be a timm or an official release of the same architecture, e.g. XCiT's two
layouts). When none recognises it and the first source kind has exactly one candidate, that one
is used, so strict accounting names every tensor that does not fit; otherwise it is a plain error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from vitzoo.errors import WeightsError
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.weights.converter import Conversion, WeightConverter, load_converted, target_shapes

logger = logging.getLogger("vitzoo.weights")


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
    own = [c for s in sources for c in converters_for(architecture, s, system=system)]
    recognised = [c for c in own if c.recognises(tensors, config)]
    if recognised:
        return recognised[0]  # in the order of preference of the source kinds
    first_kind = [c for c in own if c.source == own[0].source]
    if len(first_kind) == 1:
        return first_kind[0]  # its strict accounting then names every tensor that does not fit
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
    log: Callable[[str], None] | None = None,
) -> Conversion:
    """Convert ``tensors`` (timm / HF / official key names) into ``model`` and load them.

    The converter is the registered one for ``model``'s architecture and ``source`` unless given.
    What it assumes about the checkpoint, where keys cannot tell two releases apart, goes to
    ``log`` (default: the ``vitzoo.weights`` logger at INFO).
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
    load_converted(model, conversion, strict=strict, where=where, hint=hint)
    if converter.assumes:
        (log or logger.info)(converter.assumption_note())
    return conversion
