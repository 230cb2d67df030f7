"""Attention whose keys/values (and queries) are computed with convolutions over the 2D grid.

* :class:`SpatialReductionAttention` -- PVT / Twins GSA ("global sub-sampled attention"): keys and
  values come from the map shrunk by a ``ratio x ratio`` stride-``ratio`` conv + LayerNorm, so
  global attention costs N * N / ratio^2. Registered as ``spatial-reduction``.
* :class:`ConvProjectionAttention` -- CvT: q, k and v are each a depthwise conv (+ BatchNorm)
  over the map followed by a linear projection; k and v are strided to cut cost. Registered as
  ``conv-proj``.

Both take (B, prefix + H*W, C) tokens with the grid from the build context (``ctx.grid``) and let
prefix tokens (class tokens) bypass the convolutions, so they also fit a plain ViT with a class
token. Weights go through ``AttentionBase.attend`` (SDPA, recorded maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from vitzoo.components.attention import AttentionBase
from vitzoo.components.context import BuildContext
from vitzoo.components.grid import FollowsGrid
from vitzoo.config import ComponentConfig, PositiveInt, Rate, SpecValueError, check_positive


def split_prefix(
    x: torch.Tensor, num_prefix: int, grid: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P + H*W, C) -> prefix (B, P, C) and the map (B, C, H, W)."""
    prefix, patches = x[:, :num_prefix], x[:, num_prefix:]
    b, n, c = patches.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"attention built for grid {tuple(grid)} got {n} patch tokens")
    return prefix, patches.transpose(1, 2).reshape(b, c, *grid)


def heads_of(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, H*d) -> (B, H, N, d)."""
    b, n, _ = x.shape
    return x.view(b, n, num_heads, -1).transpose(1, 2)


class _GridAttentionConfig(ComponentConfig):
    head_dim: PositiveInt | None = None
    qkv_bias: bool = True
    attn_drop: Rate = 0.0
    proj_drop: Rate = 0.0

    def check(self, spatial_dims: int = 2, **_: Any) -> None:
        if spatial_dims != 2:
            raise SpecValueError("type", f"{self.type} works on 2D patch grids (images) only")


class SpatialReductionConfig(_GridAttentionConfig):
    """Global attention with keys/values from a ratio x ratio strided-conv reduced map (PVT/GSA)."""

    type: Literal["spatial-reduction"] = "spatial-reduction"
    ratio: PositiveInt = 2

    def check(self, **context: Any) -> None:
        super().check(**context)
        check_positive(ratio=self.ratio)


class SpatialReductionAttention(FollowsGrid, AttentionBase):
    """q from every token; k, v from the reduced map (plus prefix tokens)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        config: SpatialReductionConfig,
        grid: Sequence[int],
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__(config.attn_drop)
        self.num_heads = num_heads
        head_dim = config.head_dim or dim // num_heads
        inner = head_dim * num_heads
        self.grid = tuple(grid)
        self.num_prefix_tokens = num_prefix_tokens
        self.q = nn.Linear(dim, inner, bias=config.qkv_bias)
        self.kv = nn.Linear(dim, inner * 2, bias=config.qkv_bias)
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(config.proj_drop)
        if config.ratio > 1:
            self.sr: nn.Module = nn.Conv2d(dim, dim, config.ratio, config.ratio)
            self.norm: nn.Module = nn.LayerNorm(dim)
        else:
            self.sr, self.norm = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("spatial-reduction attention does not take token masks")
        b, n, _ = x.shape
        prefix, fmap = split_prefix(x, self.num_prefix_tokens, self.grid)
        reduced = self.norm(self.sr(fmap).flatten(2).transpose(1, 2))
        kv = self.kv(torch.cat([prefix, reduced], dim=1))
        k, v = kv.chunk(2, dim=-1)
        q = heads_of(self.q(x), self.num_heads)
        out = self.attend(q, heads_of(k, self.num_heads), heads_of(v, self.num_heads))
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, -1)))


def build_spatial_reduction(
    config: SpatialReductionConfig, ctx: BuildContext
) -> SpatialReductionAttention:
    """Spatial-reduction (global sub-sampled) attention, PVT / Twins GSA."""
    return SpatialReductionAttention(
        ctx.dim, ctx.num_heads, config, ctx.grid, ctx.num_prefix_tokens
    )


class ConvProjectionConfig(_GridAttentionConfig):
    """CvT attention: depthwise-conv + BatchNorm projections for q, k, v (k, v strided)."""

    type: Literal["conv-proj"] = "conv-proj"
    kernel_size: PositiveInt = 3
    q_stride: PositiveInt = 1
    kv_stride: PositiveInt = 2
    #: Logit scale 1/sqrt(head_dim) ("head", the usual) or 1/sqrt(width) ("width": the CvT
    #: reference code scales by the full attention width).
    scale_by: Literal["head", "width"] = "head"

    def check(self, **context: Any) -> None:
        super().check(**context)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise SpecValueError(
                "kernel_size", f"must be a positive odd integer, got {self.kernel_size}"
            )
        for name in ("q_stride", "kv_stride"):
            if getattr(self, name) < 1:
                raise SpecValueError(name, "must be a positive integer")


class DepthwiseConvBN(nn.Sequential):
    """Depthwise kxk conv (no bias) + BatchNorm: CvT's convolutional projection."""

    def __init__(self, dim: int, kernel_size: int, stride: int) -> None:
        super().__init__(
            nn.Conv2d(dim, dim, kernel_size, stride, kernel_size // 2, groups=dim, bias=False),
            nn.BatchNorm2d(dim),
        )


class ConvProjectionAttention(FollowsGrid, AttentionBase):
    """q, k, v = Linear(DWConvBN(map)); prefix tokens skip the convs (they are not on the grid)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        config: ConvProjectionConfig,
        grid: Sequence[int],
        num_prefix_tokens: int = 0,
        out_dim: int | None = None,
    ) -> None:
        super().__init__(config.attn_drop)
        out_dim = out_dim or dim
        self.num_heads = num_heads
        head_dim = config.head_dim or out_dim // num_heads
        inner = head_dim * num_heads
        self.grid = tuple(grid)
        self.num_prefix_tokens = num_prefix_tokens
        k = config.kernel_size
        self.conv_q = DepthwiseConvBN(dim, k, config.q_stride)
        self.conv_k = DepthwiseConvBN(dim, k, config.kv_stride)
        self.conv_v = DepthwiseConvBN(dim, k, config.kv_stride)
        self.proj_q = nn.Linear(dim, inner, bias=config.qkv_bias)
        self.proj_k = nn.Linear(dim, inner, bias=config.qkv_bias)
        self.proj_v = nn.Linear(dim, inner, bias=config.qkv_bias)
        self.proj = nn.Linear(inner, out_dim)
        self.proj_drop = nn.Dropout(config.proj_drop)
        self.scale = (head_dim if config.scale_by == "head" else inner) ** -0.5

    def _project(
        self, conv: nn.Module, linear: nn.Linear, prefix: torch.Tensor, fmap: torch.Tensor
    ):
        tokens = torch.cat([prefix, conv(fmap).flatten(2).transpose(1, 2)], dim=1)
        return heads_of(linear(tokens), self.num_heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("conv-proj attention does not take token masks")
        prefix, fmap = split_prefix(x, self.num_prefix_tokens, self.grid)
        q = self._project(self.conv_q, self.proj_q, prefix, fmap)
        k = self._project(self.conv_k, self.proj_k, prefix, fmap)
        v = self._project(self.conv_v, self.proj_v, prefix, fmap)
        out = self.attend(q, k, v, scale=self.scale)
        b, _, n, _ = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, -1)))


def build_conv_projection(
    config: ConvProjectionConfig, ctx: BuildContext
) -> ConvProjectionAttention:
    """Convolutional-projection attention (CvT)."""
    return ConvProjectionAttention(ctx.dim, ctx.num_heads, config, ctx.grid, ctx.num_prefix_tokens)
