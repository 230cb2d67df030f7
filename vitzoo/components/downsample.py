"""Map -> map downsampling between the stages of hierarchical backbones.

* :class:`ConvEmbed` -- an (overlapping) strided convolution followed by a LayerNorm over
  channels: the "convolutional patch embedding" of ScalableViT and SepViT (kernel 7 / stride 4
  for the stem, kernel 3 / stride 2 between stages), also CvT's convolutional token embedding.
* :class:`BlockAggregation` -- NesT's block aggregation: 3x3 conv, LayerNorm over channels,
  3x3 max-pool with stride 2. It halves the map so four neighbouring blocks become one.

* :class:`PatchMerging` -- Swin's patch merging: each 2x2 neighbourhood's channels are
  concatenated (4C) and projected to the next width, with a LayerNorm before the projection
  (Swin) or after it (Swin V2); odd maps are zero-padded first.

All take and return (B, C, H, W) maps; :func:`conv_embed_grid` / :func:`conv_embed_stage_grids`
give the output sizes at spec time so configs can validate stage grids without building anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.conv import Padding, tf_same_pads
from vitzoo.components.hierarchical import (
    ChannelLayerNorm,
    HierarchicalConfig,
    build_token_stages,
    conv_out,
)
from vitzoo.config import PositiveInt


class ConvEmbed(nn.Module):
    """Conv2d(kernel, stride, padding) -> LayerNorm over channels."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        kernel_size: int,
        stride: int,
        padding: int | None = None,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2 if padding is None else padding
        self.proj = nn.Conv2d(in_chans, dim, kernel_size, stride, pad)
        self.norm = ChannelLayerNorm(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


def conv_embed_grid(size: int, kernel_size: int, stride: int, padding: int | None = None) -> int:
    """Output side length of :class:`ConvEmbed` for an input side length ``size``."""
    return conv_out(size, kernel_size, stride, kernel_size // 2 if padding is None else padding)


def conv_embed_stages(
    in_chans: int, dims: Sequence[int], stem_kernel_size: int, stem_stride: int, norm_eps: float
) -> list[ConvEmbed]:
    """One :class:`ConvEmbed` per stage: the stem's kernel / stride first, then 3x3 stride 2
    (ScalableViT, SepViT)."""
    widths = [in_chans, *dims]
    return [
        ConvEmbed(
            widths[i],
            dim,
            *((stem_kernel_size, stem_stride) if i == 0 else (3, 2)),
            norm_eps=norm_eps,
        )
        for i, dim in enumerate(dims)
    ]


def conv_embed_stage_grids(
    image_hw: Sequence[int], num_stages: int, stem_kernel_size: int, stem_stride: int
) -> list[tuple[int, int]]:
    """The token grid of every stage of :func:`conv_embed_stages` (spec time, no model built)."""
    hw = [conv_embed_grid(s, stem_kernel_size, stem_stride) for s in image_hw]
    grids = []
    for i in range(num_stages):
        if i:
            hw = [conv_embed_grid(s, 3, 2) for s in hw]
        grids.append((hw[0], hw[1]))
    return grids


class ConvEmbedStagesConfig(HierarchicalConfig):
    """Staged models whose every stage starts with a :class:`ConvEmbed` (ScalableViT, SepViT):
    ``stem_kernel_size`` / ``stem_stride`` for the first, 3x3 stride 2 for the others."""

    stem_kernel_size: PositiveInt = 7
    stem_stride: PositiveInt = 4

    def stage_grids(self) -> list[tuple[int, int]]:
        return conv_embed_stage_grids(
            self.image_hw, len(self.dims), self.stem_kernel_size, self.stem_stride
        )


def build_conv_embed_stages(
    ctx: BuildContext,
    config: ConvEmbedStagesConfig,
    *,
    attention: Callable[[int, int], Any],
    embed_norm_eps: float,
) -> nn.ModuleList:
    """[ConvEmbed -> blocks with a PEG after the first] per stage (see :func:`build_token_stages`)."""
    embeds = conv_embed_stages(
        config.in_chans,
        config.dims,
        config.stem_kernel_size,
        config.stem_stride,
        norm_eps=embed_norm_eps,
    )
    return build_token_stages(
        ctx, config, embeds, config.stage_grids(), attention=attention, peg_kernel_size=3
    )


class MaxPool2dSame(nn.MaxPool2d):
    """Max-pool with TensorFlow "SAME" padding (-inf fill), computed from the input size.

    Why: weights trained in JAX/TensorFlow (NesT's releases) saw a 3x3/2 pool padded (0, 1) on
    even maps, not PyTorch's (1, 1), so every pooled window is one pixel off otherwise.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__(kernel_size, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_pads(x.shape[-2], self.kernel_size, self.stride)
        left, right = tf_same_pads(x.shape[-1], self.kernel_size, self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return super().forward(x)


class BlockAggregation(nn.Module):
    """NesT block aggregation: Conv3x3 -> LayerNorm(channels) -> MaxPool3x3/2 (halves H, W).

    ``padding="same"``: the pool pads like TensorFlow "SAME" (the released NesT models); the
    stride-1 conv pads 1 on every side either way.
    """

    def __init__(
        self, in_chans: int, out_chans: int, norm_eps: float = 1e-6, padding: Padding = "symmetric"
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1)
        self.norm = ChannelLayerNorm(out_chans, eps=norm_eps)
        self.pool = (
            MaxPool2dSame(3, 2) if padding == "same" else nn.MaxPool2d(3, stride=2, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.norm(self.conv(x)))


class PatchMerging(nn.Module):
    """Swin's patch merging (Liu et al. 2021, Sec. 3.1): (B, C, H, W) -> (B, out, ceil(H/2),
    ceil(W/2)).

    The 2x2 neighbourhood is laid out as [(0, 0), (1, 0), (0, 1), (1, 1)] (row, column offsets)
    along the channels -- the order of the reference code's ``x0..x3``, which the released
    ``reduction`` weights expect -- then ``norm`` + ``reduction`` (a bias-free Linear 4C -> out):
    ``norm_position="before"`` normalises the 4C concatenation (Swin),
    ``"after"`` the projected ``out`` channels (Swin V2). Odd sides are zero-padded at the end,
    as the reference code does.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int | None = None,
        *,
        norm_eps: float = 1e-5,
        norm_position: Literal["before", "after"] = "before",
    ) -> None:
        super().__init__()
        out_dim = out_dim or 2 * dim
        self.norm_after = norm_position == "after"
        self.norm = nn.LayerNorm(out_dim if self.norm_after else 4 * dim, eps=norm_eps)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.permute(0, 2, 3, 1)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        hh, ww = x.shape[1] // 2, x.shape[2] // 2
        x = x.reshape(b, hh, 2, ww, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, hh, ww, 4 * c)
        x = self.norm(self.reduction(x)) if self.norm_after else self.reduction(self.norm(x))
        return x.permute(0, 3, 1, 2)


def merged_grid(size: int) -> int:
    """Side length after :class:`PatchMerging` (odd sides are padded, so it rounds up)."""
    return (size + 1) // 2
