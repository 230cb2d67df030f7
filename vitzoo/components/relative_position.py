"""Relative-position biases beyond the window table: CrossFormer's dynamic bias and BEiT's
whole-sequence bias (with the ``rel-pos`` attention that adds it).

The learned-table bias inside windows (Swin, MaxViT, RegionViT) is
:class:`vitzoo.components.windows.RelativePositionBias`; its table size is fixed by the window.

* :class:`DynamicPositionBias` (CrossFormer) maps each offset ``(dy, dx)`` itself through a
  small MLP, so its parameters do not depend on the group size: the same weights serve groups
  of any shape (other image sizes, the last stage's whole-map group).
* :class:`SequenceRelativePositionBias` (BEiT, Bao et al., ICLR 2022, arXiv:2106.08254; BEiT v2)
  is one learned table over the whole patch grid plus three entries for the prefix tokens,
  which have no place on the grid: prefix -> patch, patch -> prefix, prefix -> prefix.
  :class:`RelPosAttention` (registered as ``rel-pos`` by the BEiT plugin) adds it to
  multi-head attention in any flat-token model, class token or not.

Each module is bound to one grid and ``forward()`` returns ``(heads, N, N)`` to pass as
``bias=`` to ``AttentionBase.attend``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.grid import refuse_dynamic_grid
from vitzoo.components.resample import resize_relative_table_geometric
from vitzoo.components.windows import relative_position_index


def relative_offsets(group: Sequence[int]) -> torch.Tensor:
    """Every distinct (dy, dx) offset inside an (h, w) group, ((2h-1)(2w-1), 2), row-major.

    Row-major order matches :func:`~vitzoo.components.windows.relative_position_index`.
    """
    h, w = group
    dy, dx = torch.arange(1 - h, h), torch.arange(1 - w, w)
    return torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)


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
