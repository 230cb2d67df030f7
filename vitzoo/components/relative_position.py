"""Relative position biases for attention inside windows / groups: offsets -> per-head biases.

Every module here is bound to one window (group) size and ``forward()`` returns
``(heads, N, N)``, N = h * w, to pass as ``bias=`` to ``AttentionBase.attend``:

* :class:`RelativePositionBias` -- a learned ((2h-1)(2w-1), heads) table indexed by the offset
  (Swin, MaxViT, RegionViT). Its size is fixed by the window; ``set_input_size`` resamples it.
* :class:`DynamicPositionBias` -- CrossFormer's DPB: each offset ``(dy, dx)`` itself through a
  small MLP, so its parameters do not depend on the group size (other image sizes, the last
  stage's whole-map group).
* :class:`ContinuousPositionBias` -- Swin V2's CPB: log-spaced offsets through a 2-layer MLP,
  ``16 * sigmoid``; offsets are normalised by the pre-training window so a fine-tuned larger
  window extrapolates from what was learned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def relative_position_index(window: Sequence[int]) -> torch.Tensor:
    """(N, N) index into a (2wh-1)(2ww-1) table of relative offsets, N = wh * ww."""
    wh, ww = window
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(
        1
    )
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


def relative_offsets(group: Sequence[int]) -> torch.Tensor:
    """Every distinct (dy, dx) offset inside an (h, w) group, ((2h-1)(2w-1), 2), row-major.

    Row-major order matches :func:`relative_position_index`.
    """
    h, w = group
    dy, dx = torch.arange(1 - h, h), torch.arange(1 - w, w)
    return torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)


def _gather(per_offset: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """((2h-1)(2w-1), heads) per-offset values -> (heads, N, N) through the offset index."""
    n = index.shape[0]
    return per_offset[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()


class RelativePositionBias(nn.Module):
    """Learned per-head bias for every relative offset inside a window -> (heads, N, N)."""

    def __init__(self, window: Sequence[int], num_heads: int) -> None:
        super().__init__()
        wh, ww = window
        self.window = (wh, ww)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("index", relative_position_index(window), persistent=False)

    def forward(self) -> torch.Tensor:
        return _gather(self.relative_position_bias_table, self.index)


class DynamicPositionBias(nn.Module):
    """``(dy, dx) -> Linear -> 3 x [LayerNorm, ReLU, Linear] -> heads`` (CrossFormer, Sec. 3.3).

    ``hidden`` is the MLP width (CrossFormer uses a quarter of a quarter of the stage width).
    """

    def __init__(self, hidden: int, num_heads: int, group: Sequence[int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.group = tuple(group)
        self.pos_proj = nn.Linear(2, hidden)
        self.pos_mlp = nn.Sequential(
            *(
                nn.Sequential(nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, out))
                for out in (hidden, hidden, num_heads)
            )
        )
        self.register_buffer("offsets", relative_offsets(self.group).float(), persistent=False)
        self.register_buffer("index", relative_position_index(self.group), persistent=False)

    def forward(self) -> torch.Tensor:
        bias = self.pos_mlp(self.pos_proj(self.offsets.to(self.pos_proj.weight.dtype)))
        n = self.index.shape[0]
        return bias[self.index.reshape(-1)].view(n, n, self.num_heads).permute(2, 0, 1)


def log_spaced_offsets(window: Sequence[int], pretrained: Sequence[int] | None) -> torch.Tensor:
    """Swin V2's CPB input: every offset of ``window`` over ``(pretrained or window) - 1`` on
    each axis, times 8, then ``sign(x) * log2(1 + |x|) / 3`` -> ((2h-1)(2w-1), 2).

    Computed in float32 whatever the model's dtype, as the reference code does (its table is a
    float32 buffer cast to the weights' dtype), so float64 runs see the same coordinates.
    """
    offsets = relative_offsets(window).to(torch.float32)
    norm = window if pretrained is None else pretrained
    for axis in (0, 1):
        offsets[:, axis] /= max(norm[axis] - 1, 1)
    offsets = offsets * 8
    return torch.sign(offsets) * torch.log2(offsets.abs() + 1.0) / math.log2(8)


class ContinuousPositionBias(nn.Module):
    """Swin V2's continuous position bias (Liu et al. 2022, Sec. 3.3): log-spaced offsets ->
    Linear(2, hidden) -> ReLU -> Linear(hidden, heads, no bias) -> 16 * sigmoid.

    Why: a learned table cannot transfer to a larger window (its new entries were never
    trained); an MLP of the (log-compressed) offset can, so a model pre-trained at window 12 is
    fine-tuned at 24 with ``pretrained_window`` = 12 keeping the offsets it knows in place.
    """

    def __init__(
        self,
        window: Sequence[int],
        num_heads: int,
        hidden: int = 512,
        pretrained_window: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.window = tuple(window)
        self.pretrained_window = None if pretrained_window is None else tuple(pretrained_window)
        self.mlp = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_heads, bias=False)
        )
        coords = log_spaced_offsets(self.window, self.pretrained_window)
        self.register_buffer("coords", coords, persistent=False)
        self.register_buffer("index", relative_position_index(self.window), persistent=False)

    def forward(self) -> torch.Tensor:
        table = self.mlp(self.coords.to(self.mlp[0].weight.dtype))
        return 16 * torch.sigmoid(_gather(table, self.index))
