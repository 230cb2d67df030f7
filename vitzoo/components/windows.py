"""Window attention on a 2D token grid: partition helpers and the ``window`` attention.

* :func:`window_partition` / :func:`window_reverse` -- (B, H, W, C) <-> (B * nW, wh * ww, C) over
  non-overlapping contiguous windows (Swin, Twins LSA, MaxViT block attention).
* :func:`grid_partition` / :func:`grid_reverse` -- the dilated counterpart: a fixed g x g grid of
  tokens spread over the whole map, one group per offset (MaxViT grid attention, CrossFormer's
  long-distance attention).
* :class:`WindowAttention` -- multi-head attention (the projections of
  :class:`~vitzoo.components.attention.MultiHeadAttention`, weights through ``attend`` so SDPA,
  ``record_attention``, scaled cosine attention and q/v-only biases work) computed inside
  windows (``mode="block"``) or grids (``mode="grid"``), with a relative position bias from
  :mod:`vitzoo.components.relative_position` (a learned table, or Swin V2's continuous MLP).
  Maps not divisible by the window are zero-padded (the padding masked out of the keys unless
  ``mask_padding: false``). ``shift_size`` makes it Swin's shifted-window attention: the map is
  rolled by the shift, and a mask (:func:`shift_region_labels`) keeps the tokens that wrapped
  around apart. Registered by the core plugin as the ``window`` attention; in a flat ViT it
  reads the patch grid from ``ctx.grid`` (class tokens are not allowed: they are not on the grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.grid import FollowsGrid, refuse_dynamic_grid
from vitzoo.components.layers import to_pair
from vitzoo.components.partition import (  # noqa: F401 - re-exported: families import them here
    grid_partition,
    grid_reverse,
    window_partition,
    window_reverse,
)
from vitzoo.components.relative_position import (  # noqa: F401 - RelativePositionBias re-exported
    ContinuousPositionBias,
    RelativePositionBias,
    TableResize,
    relative_position_index,
)
from vitzoo.config import NonNegativeIntOrPair, PositiveInt, SizeOrPair, SpecValueError


def require_grid_only(what: str, class_token: bool, distillation_token: bool) -> None:
    """Spec-time rule of attentions that partition the patch grid: no prefix tokens in the host."""
    if class_token or distillation_token:
        raise SpecValueError(
            "type",
            f"{what} partitions the patch grid, which prefix tokens are not on; "
            "set class_token: false, distillation_token: false (e.g. pool: {type: mean})",
        )


def require_tiling(
    grid: Sequence[int], step: Sequence[int], what: str, field: str = "window_size"
) -> None:
    """Spec-time rule of attentions that cannot pad: ``step`` must tile the patch grid."""
    if len(grid) != 2:
        raise SpecValueError("type", f"{what} needs a 2D patch grid, got {tuple(grid)}")
    if grid[0] % step[0] or grid[1] % step[1]:
        raise SpecValueError(
            field,
            f"{what} do not tile the {grid[0]}x{grid[1]} patch grid (image_size / patch "
            f"size); allowed: image sizes whose patch grid sides are multiples of "
            f"{step[0]}x{step[1]}",
        )


class GridBoundAttentionChecks:
    """Spec-time ``check`` of attentions fitted to the build-time patch grid (CrossFormer's
    ``lsda``, ScalableViT's ``ssa`` / ``iwsa``, SepViT's ``dssa``).

    They all take the same context and apply the same rules in the same order: their own fields
    (:meth:`check_fields`), no prefix tokens in the host (:func:`require_grid_only`), no
    ``dynamic_img_size`` (:func:`~vitzoo.components.grid.refuse_dynamic_grid`), and -- where the
    host knows its patch grid -- that their windows / groups / reduction tile it
    (:meth:`check_grid_fit`). Mix it in before the config base; messages name the attention by
    its registered ``type``.
    """

    def check(
        self,
        class_token: bool = False,
        distillation_token: bool = False,
        grid: Sequence[int] | None = None,
        dynamic_img_size: bool = False,
        **_: Any,
    ) -> None:
        self.check_fields()
        require_grid_only(self.type, class_token, distillation_token)  # type: ignore[attr-defined]
        refuse_dynamic_grid(self.type, dynamic_img_size)  # type: ignore[attr-defined]
        if grid is not None:
            self.check_grid_fit(grid)

    def check_fields(self) -> None:
        """Rules on the config's own fields, before the host rules (default: none)."""

    def check_grid_fit(self, grid: Sequence[int]) -> None:
        """Raise a ``SpecValueError`` when the attention does not tile the patch ``grid``."""
        raise NotImplementedError


class WindowAttentionConfig(MhsaConfig):
    """Attention inside local windows (block) or dilated grids, optional relative position bias,
    optional cyclic shift (Swin's shifted windows)."""

    type: Literal["window"] = "window"  # type: ignore[assignment]
    window_size: SizeOrPair = 7
    mode: Literal["block", "grid"] = "block"
    #: Cyclic shift of the map before partitioning (Swin's shifted windows; ``block`` mode
    #: only): the windows of a shifted block straddle the unshifted block's borders, and a mask
    #: keeps tokens that only met through the wrap-around from attending each other. ``0``: none.
    shift_size: NonNegativeIntOrPair = 0
    #: Where a map that the windows do not tile is zero-padded, relative to the shift:
    #: ``shift-then-pad`` (timm's Swin and Swin V2) or ``pad-then-shift`` (the Microsoft
    #: detection code and Hugging Face's Swin / Swinv2). Both label the shift-mask regions on
    #: the padded map; they place the padding, hence the windows' contents, differently, so a
    #: checkpoint computes its function at such sizes only with its reference's order.
    pad_order: Literal["shift-then-pad", "pad-then-shift"] = "shift-then-pad"
    relative_bias: bool = True
    #: The relative bias: a learned ``table`` per offset (Swin, MaxViT), or ``continuous``: a
    #: small MLP over log-spaced offsets (Swin V2's CPB), whose weights fit any window size.
    position_bias: Literal["table", "continuous"] = "table"
    #: ``continuous`` only: the window the CPB was trained with; offsets are normalised by it,
    #: so fine-tuning at a larger window extrapolates (Swin V2's ``pretrained_window_size``).
    #: None: the window itself.
    pretrained_window_size: SizeOrPair | None = None
    #: ``continuous`` only: the CPB MLP's hidden width.
    cpb_hidden_dim: PositiveInt = 512
    #: ``table`` only: how ``set_input_size`` with another window resamples the table:
    #: ``bicubic`` (the Microsoft Swin code, MaxViT) or ``geometric`` (timm's Swin, BEiT's recipe).
    table_resampling: TableResize = "bicubic"
    #: When the grid does not tile into windows it is zero-padded; True masks the padded keys
    #: out, False lets them take part (their keys and values are the projections' biases), as
    #: Twins' and Swin's reference code (and timm's ports) do -- so their weights compute their
    #: function at any image size, not only where the windows tile the map.
    mask_padding: bool = True
    shared_weight_options: ClassVar[bool] = True

    def check(self, class_token: bool = False, distillation_token: bool = False, **_: Any) -> None:
        window, shift = to_pair(self.window_size), to_pair(self.shift_size)
        if min(window) < 1:
            raise SpecValueError("window_size", f"must be positive, got {self.window_size}")
        if any(s >= w for s, w in zip(shift, window, strict=True)):
            raise SpecValueError(
                "shift_size",
                f"{self.shift_size} must be smaller than the window {self.window_size} on each "
                f"axis (Swin shifts by half a window); allowed: 0 to {min(window) - 1}",
            )
        if any(shift) and self.mode != "block":
            raise SpecValueError("shift_size", "shifted windows need mode: block")
        if self.pretrained_window_size is not None and self.position_bias != "continuous":
            raise SpecValueError(
                "pretrained_window_size", "only the continuous position bias takes it"
            )
        if self.table_resampling != "bicubic" and self.position_bias != "table":
            raise SpecValueError(
                "table_resampling", "only a learned table is resampled (position_bias: table)"
            )
        require_grid_only("window attention", class_token, distillation_token)


def shift_region_labels(
    padded: Sequence[int], window: Sequence[int], shift: Sequence[int]
) -> torch.Tensor:
    """(H, W) labels of the cyclic-shift regions of a shifted, padded map (Swin's mask).

    Per axis with a shift ``s``: ``[0, L - w)`` is region 0, ``[L - w, L - s)`` region 1 and
    ``[L - s, L)`` region 2 (the rows that wrapped around); an axis without shift is one region.
    Tokens attend each other only within a region.
    """
    labels = []
    for length, w, s in zip(padded, window, shift, strict=True):
        idx = torch.arange(length)
        labels.append((idx >= length - w).long() + (idx >= length - s).long() if s else idx * 0)
    return labels[0][:, None] * 3 + labels[1][None, :]


class WindowAttention(FollowsGrid, MultiHeadAttention):
    """Multi-head attention within windows of a (B, H, W, C) map (see the module docstring)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        config: WindowAttentionConfig,
        grid: Sequence[int] = (),
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__(dim, num_heads, config)
        self.window = to_pair(config.window_size)
        self.shift = to_pair(config.shift_size)
        self.pad_first = config.pad_order == "pad-then-shift"
        self.mode = config.mode
        self.grid = tuple(grid)
        if num_prefix_tokens:
            raise ValueError("window attention cannot attend prefix tokens (they have no window)")
        self.relative_position = position_bias(config, self.window, num_heads)
        self.mask_padding = config.mask_padding

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("window attention does not take token masks")
        b, n, c = x.shape
        if len(self.grid) != 2 or self.grid[0] * self.grid[1] != n:
            raise ValueError(f"window attention built for grid {self.grid} got {n} tokens")
        return self.forward_map(x.view(b, *self.grid, c)).reshape(b, n, c)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C) with attention inside each window / grid group."""
        b, h, w, c = x.shape
        pads = ((-h) % self.window[0], (-w) % self.window[1])
        padded = (h + pads[0], w + pads[1])
        groups = self._partition(self._arrange(x, pads))
        q, k, v = self.split_heads(groups)
        mask = self._window_mask(b, (h, w), pads, x.device)
        bias = self.relative_position() if self.relative_position is not None else None
        out = self.merge_heads(self.attend(q, k, v, mask, bias=bias))
        return self._restore(self._reverse(out, padded), (h, w))

    def _arrange(self, x: torch.Tensor, pads: tuple[int, int]) -> torch.Tensor:
        """Shift and pad a (B, H, W, C) map in the configured order."""
        shifted = any(self.shift)
        if shifted and not self.pad_first:
            x = torch.roll(x, (-self.shift[0], -self.shift[1]), (1, 2))
        if any(pads):
            x = F.pad(x, (0, 0, 0, pads[1], 0, pads[0]))
        if shifted and self.pad_first:
            x = torch.roll(x, (-self.shift[0], -self.shift[1]), (1, 2))
        return x

    def _restore(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Undo :meth:`_arrange` on the (B, Hp, Wp, C) output: unshift and crop."""
        shifted = any(self.shift)
        if shifted and self.pad_first:
            x = torch.roll(x, self.shift, (1, 2))
        if x.shape[1:3] != hw:
            x = x[:, : hw[0], : hw[1]].contiguous()
        if shifted and not self.pad_first:
            x = torch.roll(x, self.shift, (1, 2))
        return x

    def _window_mask(
        self, batch: int, hw: tuple[int, int], pads: tuple[int, int], device: torch.device
    ) -> torch.Tensor | None:
        """(B * nW, 1, N, N) boolean mask (True = attend), or None when every pair may attend:
        the shift's regions (:func:`shift_region_labels`) and, with ``mask_padding``, the
        padded keys."""
        shifted, masked_pad = any(self.shift), self.mask_padding and any(pads)
        if not (shifted or masked_pad):
            return None
        padded = (hw[0] + pads[0], hw[1] + pads[1])
        allowed = None
        if shifted:
            labels = shift_region_labels(padded, self.window, self.shift).to(device)
            labels = self._partition(labels[None, :, :, None]).squeeze(-1)  # (nW, N)
            allowed = labels[:, :, None] == labels[:, None, :]
        if masked_pad:
            valid = self._arrange(torch.ones(1, *hw, 1, device=device), pads)
            keys = self._partition(valid).squeeze(-1).bool()[:, None, :]  # (nW, 1, N)
            allowed = keys if allowed is None else allowed & keys
        assert allowed is not None
        return allowed.repeat(batch, 1, 1)[:, None]

    def _partition(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "block":
            return window_partition(x, self.window)
        return grid_partition(x, self.window)

    def _reverse(self, groups: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if self.mode == "block":
            return window_reverse(groups, self.window, hw)
        return grid_reverse(groups, self.window, hw)


def position_bias(
    config: WindowAttentionConfig, window: tuple[int, int], num_heads: int
) -> nn.Module | None:
    """The relative position bias module ``config`` asks for, for ``window``, or None."""
    if not config.relative_bias:
        return None
    if config.position_bias == "table":
        return RelativePositionBias(window, num_heads, config.table_resampling)
    pretrained = config.pretrained_window_size
    return ContinuousPositionBias(
        window,
        num_heads,
        hidden=config.cpb_hidden_dim,
        pretrained_window=None if pretrained is None else to_pair(pretrained),
    )


def build_window_attention(config: WindowAttentionConfig, ctx: BuildContext) -> WindowAttention:
    """Window (block) or grid attention on the patch grid, with relative position bias."""
    return WindowAttention(ctx.dim, ctx.num_heads, config, ctx.grid, ctx.num_prefix_tokens)
