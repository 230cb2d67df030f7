"""Cutting a (B, H, W, C) map into windows or strided grids and putting it back: pure reshapes.

A module of its own, below the attentions that use them and the resampling of blocked tables
(:mod:`vitzoo.components.resample`), so neither has to import the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/wh * W/ww, wh * ww, C), windows of adjacent tokens."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], hw: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C)."""
    wh, ww = window
    h, w = hw
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def grid_partition(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/gh * W/gw, gh * gw, C): each group is a gh x gw grid, stride H/gh."""
    b, h, w, c = x.shape
    gh, gw = grid
    x = x.view(b, gh, h // gh, gw, w // gw, c).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, gh * gw, c)


def grid_reverse(groups: torch.Tensor, grid: Sequence[int], hw: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`grid_partition`: -> (B, H, W, C)."""
    gh, gw = grid
    h, w = hw
    c = groups.shape[-1]
    x = groups.view(-1, h // gh, w // gw, gh, gw, c).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(-1, h, w, c)
