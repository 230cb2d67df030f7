"""Relative-position biases: offsets -> per-head biases added to attention logits.

Every module here is bound to one window (group) or grid and ``forward()`` returns
``(heads, N, N)`` to pass as ``bias=`` to ``AttentionBase.attend``:

* :class:`RelativePositionBias` -- a learned ((2h-1)(2w-1), heads) table indexed by the offset
  inside a window (Swin, MaxViT, RegionViT). Its size is fixed by the window;
  ``set_input_size`` resamples it.
* :class:`DynamicPositionBias` -- CrossFormer's DPB: each offset ``(dy, dx)`` itself through a
  small MLP, so its parameters do not depend on the group size.
* :class:`ContinuousPositionBias` -- Swin V2's CPB: log-spaced offsets through a 2-layer MLP,
  ``16 * sigmoid``; offsets are normalised by the pre-training window so a fine-tuned larger
  window extrapolates from what was learned.
* :class:`SequenceRelativePositionBias` (BEiT, Bao et al., ICLR 2022, arXiv:2106.08254; BEiT v2)
  -- one learned table over the whole patch grid plus three entries for the prefix tokens,
  which have no place on the grid: prefix -> patch, patch -> prefix, prefix -> prefix.
  :class:`RelPosAttention` (registered as ``rel-pos`` by the BEiT plugin) adds it to
  multi-head attention in any flat-token model, class token or not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.grid import refuse_dynamic_grid
from vitzoo.components.resample import resize_relative_table_geometric


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


#: How a learned window table is resampled for another window size: ``bicubic`` over the offset
#: grid (the Microsoft Swin code's fine-tuning recipe, MaxViT), or ``geometric`` -- BEiT's
#: geometric-progression offsets, which timm's ``set_window_size`` uses for Swin.
TableResize = Literal["bicubic", "geometric"]


class RelativePositionBias(nn.Module):
    """Learned per-head bias for every relative offset inside a window -> (heads, N, N)."""

    def __init__(
        self, window: Sequence[int], num_heads: int, resampling: TableResize = "bicubic"
    ) -> None:
        super().__init__()
        wh, ww = window
        self.window = (wh, ww)
        self.resampling = resampling
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("index", relative_position_index(window), persistent=False)

    def forward(self) -> torch.Tensor:
        return _gather(self.relative_position_bias_table, self.index)

    def resample_tensor(
        self, name: str, tensor: torch.Tensor, old: RelativePositionBias
    ) -> torch.Tensor | None:
        """The table at this window the ``geometric`` way; None leaves it to the shared
        bicubic rule (:mod:`vitzoo.components.resample`)."""
        if name != "relative_position_bias_table" or self.resampling != "geometric":
            return None
        return resize_relative_table_geometric(tensor, old.window, self.window)


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


# -- BEiT: one table over the whole sequence --------------------------------------------------
def sequence_position_index(grid: Sequence[int], num_prefix: int) -> torch.Tensor:
    """(P + N, P + N) index into ``[grid table ((2h-1)(2w-1) rows); 3 prefix entries]``.

    Patch pairs index their offset (:func:`~vitzoo.components.windows.relative_position_index`);
    a prefix query reads entry ``T`` for patch keys, a patch query entry ``T + 1`` for prefix
    keys, and prefix pairs entry ``T + 2`` (``T`` the grid table's length): BEiT's three
    class-token entries, shared by every prefix token when there are several.
    """
    h, w = grid
    table = (2 * h - 1) * (2 * w - 1)
    patches = relative_position_index((h, w))
    if not num_prefix:
        return patches
    n = num_prefix + h * w
    index = torch.full((n, n), table + 2, dtype=patches.dtype)
    index[num_prefix:, num_prefix:] = patches
    index[:num_prefix, num_prefix:] = table
    index[num_prefix:, :num_prefix] = table + 1
    return index


class SequenceRelativePositionBias(nn.Module):
    """A learned per-head bias for every pair of tokens of the sequence -> (heads, L, L).

    ``relative_position_bias_table`` ((2h-1)(2w-1), heads) holds one entry per patch offset and
    ``prefix_bias`` (3, heads) the prefix entries (see :func:`sequence_position_index`); kept
    apart so the grid table resamples like any offset table while the prefix entries stay.
    Fitted to its grid: another input size rebuilds it (``set_input_size``), the table
    resampled as BEiT's reference does (:meth:`resample_tensor`).
    """

    #: Its table is sized by the grid, so it cannot follow a changing one per call.
    follows_grid = False

    def __init__(self, grid: Sequence[int], num_heads: int, num_prefix: int) -> None:
        super().__init__()
        if len(grid) != 2:
            raise ValueError(f"the sequence relative-position bias needs a 2-D grid, got {grid}")
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_prefix = int(num_prefix)
        offsets = (2 * self.grid[0] - 1) * (2 * self.grid[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(offsets, num_heads))
        self.prefix_bias = nn.Parameter(torch.zeros(3, num_heads)) if num_prefix else None
        index = sequence_position_index(self.grid, self.num_prefix)
        self.register_buffer("index", index, persistent=False)

    def forward(self) -> torch.Tensor:
        table = self.relative_position_bias_table
        if self.prefix_bias is not None:
            table = torch.cat((table, self.prefix_bias))
        n = self.index.shape[0]
        return table[self.index.reshape(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()

    def resample_tensor(
        self, name: str, tensor: torch.Tensor, old: SequenceRelativePositionBias
    ) -> torch.Tensor | None:
        """The grid table at another input size, as timm's ``Beit.set_input_size`` makes it."""
        if name != "relative_position_bias_table":
            return None
        return resize_relative_table_geometric(tensor, old.grid, self.grid)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, num_prefix={self.num_prefix}"


class RelPosAttentionConfig(MhsaConfig):
    """Multi-head attention plus a learned relative-position bias over the whole sequence
    (BEiT): patch offsets on the grid and three entries for the prefix tokens."""

    type: Literal["rel-pos"] = "rel-pos"  # type: ignore[assignment]
    #: Goes through ``split_heads`` / ``attend``, so ``cosine`` and ``key_bias`` act here.
    shared_weight_options: ClassVar[bool] = True

    def check(self, dynamic_img_size: bool = False, **_: Any) -> None:
        refuse_dynamic_grid(
            "rel-pos attention (its table is sized by the patch grid)", dynamic_img_size
        )


class RelPosAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` whose logits get a :class:`SequenceRelativePositionBias`."""

    def __init__(self, config: RelPosAttentionConfig, ctx: BuildContext) -> None:
        super().__init__(ctx.dim, ctx.num_heads, config)
        self.relative_position = SequenceRelativePositionBias(
            ctx.grid, self.num_heads, ctx.num_prefix_tokens
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        expected = self.relative_position.index.shape[0]
        if x.shape[1] != expected:
            grid = self.relative_position.grid
            raise ValueError(
                f"rel-pos attention was built for {expected} tokens ({grid[0]}x{grid[1]} grid + "
                f"{self.relative_position.num_prefix} prefix), got {x.shape[1]}"
            )
        q, k, v = self.split_heads(x)
        return self.merge_heads(self.attend(q, k, v, mask, bias=self.relative_position()))


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
