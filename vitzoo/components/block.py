"""Transformer blocks: a residual attention branch and a residual MLP branch."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.layers import maybe_drop_path, maybe_layer_scale
from vitzoo.components.norms import NormKind, make_norm
from vitzoo.config import ComponentConfig, PositiveFloat


class PreNormBlockConfig(ComponentConfig):
    """x + attn(norm(x)); x + mlp(norm(x)), with optional LayerScale and drop-path."""

    type: Literal["pre-norm"] = "pre-norm"
    layer_scale: PositiveFloat | None = None
    norm_eps: PositiveFloat = 1e-6
    #: LayerNorm (ViT) or RMSNorm before each branch.
    norm: NormKind = "layernorm"


class PreNormBlock(nn.Module):
    """Pre-norm transformer block.

    The standard ViT block. Drop-path rate comes from the architecture's per-layer schedule."""

    def __init__(self, config: PreNormBlockConfig, ctx: BuildContext) -> None:
        super().__init__()
        dim = ctx.dim
        self.norm1 = make_norm(config.norm, dim, config.norm_eps)
        self.attn = ctx.build("attention", ctx.attention)
        self.ls1 = maybe_layer_scale(dim, config.layer_scale)
        self.norm2 = make_norm(config.norm, dim, config.norm_eps)
        self.mlp = ctx.build("mlp", ctx.mlp)
        self.ls2 = maybe_layer_scale(dim, config.layer_scale)
        self.drop_path = maybe_drop_path(ctx.drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), mask=mask)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
