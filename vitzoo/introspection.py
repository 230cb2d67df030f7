"""Attention maps and intermediate tokens of any model, without monkey-patching.

Every attention module derives from :class:`~vitzoo.components.attention.AttentionBase`, which
keeps its weights when ``store_attention`` is on. :func:`record_attention` turns that on for one
forward pass and collects the maps in module order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitzoo.components.attention import AttentionBase


def attention_modules(model: nn.Module) -> list[tuple[str, AttentionBase]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AttentionBase)]


@contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, attention weights are kept; the yielded dict is filled on exit.

    ``maps[name]`` is (B, heads, N_query, N_key) for the attention module called ``name``.
    """
    modules = attention_modules(model)
    maps: dict[str, torch.Tensor] = {}
    for _, module in modules:
        module.store_attention, module.attention_map = True, None
    try:
        yield maps
    finally:
        for name, module in modules:
            if module.attention_map is not None:
                maps[name] = module.attention_map
            module.store_attention, module.attention_map = False, None


def attention_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` once and return every attention module's map, keyed by module name."""
    with record_attention(model) as maps:
        model(x)
    return maps


@dataclass
class Inspection:
    """Everything one inspected forward pass saw.

    ``attentions[name]``: (B, heads, N_query, N_key) per attention module, in module order;
    ``intermediates["layer{i}"]``: per-layer feature maps (B, C, H, W) (a ViT's patch tokens
    on their grid, prefix tokens left out; a hierarchical model's stage maps);
    ``features``: the final features (what ``forward_features`` returns); ``output``: the logits
    (exactly what ``model(x)`` returns in the same mode).
    """

    output: Any
    features: torch.Tensor
    attentions: dict[str, torch.Tensor] = field(default_factory=dict)
    intermediates: dict[str, torch.Tensor] = field(default_factory=dict)


def _layer_count(model: nn.Module) -> int | None:
    for name in ("blocks", "stages", "layers"):
        container = getattr(model, name, None)
        if isinstance(container, nn.ModuleList | nn.Sequential):
            return len(container)
    return None


def _normalise_layers(model: nn.Module, layers: list[int]) -> dict[int, int]:
    """Resolved index -> the index as the caller wrote it (``-1``); duplicates and out-of-range
    indices are refused rather than silently merged or wrapped."""
    count = _layer_count(model)
    out: dict[int, int] = {}
    for i in layers:
        if count is not None and not -count <= i < count:
            raise ValueError(
                f"layer {i} is out of range: this model has {count} (allowed: {-count} to "
                f"{count - 1})"
            )
        resolved = i % count if count is not None else i
        if resolved in out:
            raise ValueError(f"layers names layer {resolved} twice ({out[resolved]} and {i})")
        out[resolved] = i
    return out


def inspect_forward(
    model: nn.Module, x: torch.Tensor, layers: list[int] | None = None
) -> Inspection:
    """Run ``model`` once on ``x`` and return its output, attention maps and per-layer outputs.

    Built on the model protocol (``forward_intermediates``, ``forward_head``) and
    :func:`record_attention`; nothing is patched, so the output equals ``model(x)``. ``layers``
    selects blocks/stages (negative indices count from the end; ``None``: all).

    Named ``inspect_forward`` rather than ``inspect`` so it does not shadow the standard
    library's module (``vitzoo.inspect`` remains, deprecated, as an alias).
    """
    asked = None if layers is None else _normalise_layers(model, layers)
    indices = None if asked is None else list(asked)
    with record_attention(model) as maps:
        final, outputs = model.forward_intermediates(x, indices=indices)  # type: ignore[operator]
    # outputs come in the order asked for (vitzoo.components.features): label each with the
    # index the caller wrote for it (``layer-1`` is the last block's output)
    names = (
        [f"layer{i}" for i in range(len(outputs))]
        if asked is None
        else [f"layer{asked[r]}" for r in asked]
    )
    if len(names) != len(outputs):  # a model whose layers are not its ``blocks``
        names = [f"layer{i}" for i in range(len(outputs))]
    return Inspection(
        output=model.forward_head(final),  # type: ignore[operator]
        features=final,
        attentions=dict(maps),
        intermediates=dict(zip(names, outputs, strict=True)),
    )
