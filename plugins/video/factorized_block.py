"""The factorised space-time block (ViViT Model 3, "factorised self-attention"): attention
within each frame, then across frames at each spatial position, then the MLP.

It is a registered block, so any video model with a (t, h, w) grid and no prefix tokens can use
it (``vit3d`` with ``class_token: false``, and ViViT's factorised-self-attention variant).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from vitzoo import ComponentConfig, SpecValueError
from vitzoo.components.context import BuildContext
from vitzoo.components.grid import FollowsGrid
from vitzoo.components.layers import maybe_drop_path, maybe_layer_scale
from vitzoo.config import PositiveFloat


class FactorizedBlockConfig(ComponentConfig):
    """x + attn_space(norm(x)) per frame; x + attn_time(norm(x)) per position; x + mlp(norm(x))."""

    type: Literal["factorized-space-time"] = "factorized-space-time"
    layer_scale: PositiveFloat | None = None
    norm_eps: PositiveFloat = 1e-6

    def check(
        self,
        spatial_dims: int = 3,
        class_token: bool = False,
        distillation_token: bool = False,
        **_: Any,
    ) -> None:
        if spatial_dims != 3:
            raise SpecValueError(
                "type", "factorized-space-time blocks need a video model (T, H, W)"
            )
        if class_token or distillation_token:
            raise SpecValueError(
                "type",
                "factorized-space-time blocks reshape tokens into (frames, positions) and take no "
                "prefix tokens; set class_token: false and use pool: mean",
            )


def time_major_mask(mask: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a (B, T*S) token mask into per-frame (B*T, S) and per-position (B*S, T) masks.

    A frame that is all padding attends freely within itself (its outputs are ignored), so no
    softmax row is ever fully masked.
    """
    batch = mask.shape[0]
    m = mask.reshape(batch, frames, -1)
    spatial = m | ~m.any(dim=-1, keepdim=True)
    return spatial.reshape(batch * frames, -1), m.transpose(1, 2).reshape(-1, frames)


class FactorizedSpaceTimeBlock(FollowsGrid, nn.Module):
    """Factorised space-time block (ViViT Model 3).

    ViViT's factorised self-attention: spatial attention, temporal attention, then the MLP.
    """

    def __init__(self, config: FactorizedBlockConfig, ctx: BuildContext) -> None:
        super().__init__()
        if len(ctx.grid) != 3 or ctx.num_prefix_tokens:
            raise ValueError("factorized-space-time blocks need a (t, h, w) grid and no prefix")
        dim, eps = ctx.dim, config.norm_eps
        self.grid = tuple(ctx.grid)  # only the frame count matters: grid[0]
        self.norm_space = nn.LayerNorm(dim, eps=eps)
        self.attn_space = ctx.build("attention", ctx.attention)
        self.ls_space = maybe_layer_scale(dim, config.layer_scale)
        self.norm_time = nn.LayerNorm(dim, eps=eps)
        self.attn_time = ctx.build("attention", ctx.attention)
        self.ls_time = maybe_layer_scale(dim, config.layer_scale)
        self.norm_mlp = nn.LayerNorm(dim, eps=eps)
        self.mlp = ctx.build("mlp", ctx.mlp)
        self.ls_mlp = maybe_layer_scale(dim, config.layer_scale)
        self.drop_path = maybe_drop_path(ctx.drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None and mask.ndim != 2:
            raise ValueError("factorized-space-time blocks take a (B, N) token padding mask")
        b, n, d = x.shape
        t = self.grid[0]
        s = n // t
        space_mask, time_mask = (None, None) if mask is None else time_major_mask(mask, t)
        xs = x.reshape(b * t, s, d)
        xs = xs + self.drop_path(
            self.ls_space(self.attn_space(self.norm_space(xs), mask=space_mask))
        )
        xt = xs.reshape(b, t, s, d).transpose(1, 2).reshape(b * s, t, d)
        xt = xt + self.drop_path(self.ls_time(self.attn_time(self.norm_time(xt), mask=time_mask)))
        x = xt.reshape(b, s, t, d).transpose(1, 2).reshape(b, n, d)
        return x + self.drop_path(self.ls_mlp(self.mlp(self.norm_mlp(x))))
