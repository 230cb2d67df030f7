"""Attention maps and intermediate tokens of any model, without monkey-patching.

Every attention module derives from :class:`~vitzoo.components.attention.AttentionBase`, which
keeps its weights when ``store_attention`` is on. :func:`record_attention` turns that on for one
forward pass and collects the maps in module order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
