"""Window attention on a 2D token grid: partition helpers, relative position bias, attention.

* :func:`window_partition` / :func:`window_reverse` -- (B, H, W, C) <-> (B * nW, wh * ww, C) over
  non-overlapping contiguous windows (Swin, Twins LSA, MaxViT block attention).
* :func:`grid_partition` / :func:`grid_reverse` -- the dilated counterpart: a fixed g x g grid of
  tokens spread over the whole map, one group per offset (MaxViT grid attention, CrossFormer's
  long-distance attention).
* :class:`RelativePositionBias` -- a learned (2w-1)^2 x heads table indexed by relative offsets
  inside a window.
* :class:`WindowAttention` -- multi-head attention (the projections of
  :class:`~vitzoo.components.attention.MultiHeadAttention`, weights through ``attend`` so SDPA and
  ``record_attention`` work) computed inside windows (``mode="block"``) or grids
  (``mode="grid"``). Maps not divisible by the window are zero-padded and the padding is masked
  out of the keys. Registered by the core plugin as the ``window`` attention; in a flat ViT it
  reads the patch grid from ``ctx.grid`` (class tokens are not allowed: they are not on the grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.grid import FollowsGrid, refuse_dynamic_grid
from vitzoo.components.layers import to_pair
from vitzoo.config import SizeOrPair, SpecValueError


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


def relative_position_index(window: Sequence[int]) -> torch.Tensor:
    """(N, N) index into a (2wh-1)(2ww-1) table of relative offsets, N = wh * ww."""
    wh, ww = window
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(
        1
    )
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


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
        n = self.index.shape[0]
        bias = self.relative_position_bias_table[self.index.reshape(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous()


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
    """Attention inside local windows (block) or dilated grids, optional relative position bias."""

    type: Literal["window"] = "window"  # type: ignore[assignment]
    window_size: SizeOrPair = 7
    mode: Literal["block", "grid"] = "block"
    relative_bias: bool = True
    #: When the grid does not tile into windows it is zero-padded; True masks the padded keys
    #: out, False lets them take part (their keys and values are the projections' biases), as
    #: Twins' reference code (and timm's port) does -- so its weights compute their function
    #: at any image size, not only where the windows tile the map.
    mask_padding: bool = True

    def check(self, class_token: bool = False, distillation_token: bool = False, **_: Any) -> None:
        if min(to_pair(self.window_size)) < 1:
            raise SpecValueError("window_size", f"must be positive, got {self.window_size}")
        require_grid_only("window attention", class_token, distillation_token)


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
        self.mode = config.mode
        self.grid = tuple(grid)
        if num_prefix_tokens:
            raise ValueError("window attention cannot attend prefix tokens (they have no window)")
        self.relative_position = (
            RelativePositionBias(self.window, num_heads) if config.relative_bias else None
        )
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
        wh, ww = self.window
        pad_h, pad_w = (-h) % wh, (-w) % ww
        key_mask = None
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        if (pad_h or pad_w) and self.mask_padding:
            valid = torch.zeros(1, h + pad_h, w + pad_w, 1, dtype=torch.bool, device=x.device)
            valid[:, :h, :w] = True
            key_mask = self._partition(valid.to(x.dtype)).squeeze(-1).bool()  # (nW, N)
            key_mask = key_mask.repeat(b, 1)[:, None, None, :]
        hp, wp = h + pad_h, w + pad_w
        groups = self._partition(x)
        q, k, v = self.split_heads(groups)
        bias = self.relative_position() if self.relative_position is not None else None
        out = self.merge_heads(self.attend(q, k, v, key_mask, bias=bias))
        out = self._reverse(out, (hp, wp))
        return out[:, :h, :w].contiguous() if (pad_h or pad_w) else out

    def _partition(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "block":
            return window_partition(x, self.window)
        return grid_partition(x, self.window)

    def _reverse(self, groups: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if self.mode == "block":
            return window_reverse(groups, self.window, hw)
        return grid_reverse(groups, self.window, hw)


def build_window_attention(config: WindowAttentionConfig, ctx: BuildContext) -> WindowAttention:
    """Window (block) or grid attention on the patch grid, with relative position bias."""
    return WindowAttention(ctx.dim, ctx.num_heads, config, ctx.grid, ctx.num_prefix_tokens)
