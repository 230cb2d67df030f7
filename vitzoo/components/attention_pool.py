"""Multi-head attention pooling (MAP): a learned probe attends to the tokens.

The pooling of SigLIP's image tower (Zhai et al., 2023, arXiv:2303.15343; introduced for ViTs in
Zhai et al., "Scaling Vision Transformers", 2022): one learned query ("probe") attends to the
tokens with multi-head attention; the result goes through an output projection, then a residual
LayerNorm -> MLP branch. Its output is one vector per image, so any head can follow it, in any
spec whose model passes flat tokens to its pooling (a ViT, CaiT, DeiT ...).

Which tokens it reads: by default the patch tokens (prefix tokens left out), as timm's
``global_pool='map'`` does; ``include_prefix: true`` lets the probe read them too (a CaiT
whose class-attention stage only updates the class token needs that, or the class stage would
be dead weight). An optional boolean key-padding mask ``(B, N)`` (True = attend) over the
tokens it is given leaves padding out, for packed / native-resolution batches.

Parameter names follow timm's ``AttentionPoolLatent`` (``latent``, ``q``, ``kv``, ``proj``,
``norm``, ``mlp``), so timm checkpoints map one to one; Hugging Face's ``probe`` /
``in_proj_weight`` split into ``latent`` / ``q`` + ``kv``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.mlp import MlpConfig, build_mlp
from vitzoo.components.norms import NormKind, make_norm
from vitzoo.components.pooling import pooled_tokens
from vitzoo.config import (
    ComponentConfig,
    ComponentSpec,
    PositiveFloat,
    PositiveInt,
    SpecValueError,
)


class MapPoolConfig(ComponentConfig):
    """Multi-head attention pooling: a learned probe attends to the tokens (SigLIP's head)."""

    type: Literal["map"] = "map"
    #: Attention heads of the probe; default: the model's ``num_heads``.
    num_heads: PositiveInt | None = None
    #: The MLP after the attention; default: the model's own ``mlp`` spec (as SigLIP does),
    #: or a ratio-4 GELU MLP where the model has none.
    mlp: ComponentSpec("mlp") | None = None
    qkv_bias: bool = True
    norm: NormKind = "layernorm"
    norm_eps: PositiveFloat = 1e-6
    #: Let the probe read the prefix (class / distillation / register) tokens too.
    include_prefix: bool = False

    def check(self, dim: int | None = None, num_heads: int | None = None, **_: Any) -> None:
        heads = self.num_heads or num_heads
        if dim and heads and dim % heads:
            raise SpecValueError(
                "num_heads",
                f"the probe's {heads} heads do not divide the width {dim}; allowed: "
                f"{[h for h in range(1, min(dim, 64) + 1) if dim % h == 0]}",
            )


class MapPool(nn.Module):
    """``forward(tokens (B, N, D), num_prefix_tokens, mask=None) -> (B, D)``."""

    def __init__(self, dim: int, num_heads: int, mlp: nn.Module, config: MapPoolConfig) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"map pooling: {num_heads} heads do not divide width {dim}")
        self.num_heads = num_heads
        self.include_prefix = config.include_prefix
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm = make_norm(config.norm, dim, config.norm_eps)
        self.mlp = mlp
        # the probe's scale as timm / big_vision draw it (the model's init leaves Parameters be)
        nn.init.trunc_normal_(self.latent, std=dim**-0.5)

    def forward(
        self, tokens: torch.Tensor, num_prefix_tokens: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        tokens, mask = pooled_tokens(tokens, mask, num_prefix_tokens, self.include_prefix)
        b, n, d = tokens.shape
        heads, head_dim = self.num_heads, d // self.num_heads
        q = self.q(self.latent).reshape(1, 1, heads, head_dim).transpose(1, 2)
        k, v = self.kv(tokens).reshape(b, n, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn_mask = None
        if mask is not None:
            if mask.dtype != torch.bool or tuple(mask.shape) != (b, n):
                raise ValueError(
                    f"map pooling takes a boolean key-padding mask of shape {(b, n)} "
                    f"(True = attend), got {mask.dtype} {tuple(mask.shape)}"
                )
            attn_mask = mask[:, None, None, :]
        pooled = F.scaled_dot_product_attention(q.expand(b, -1, -1, -1), k, v, attn_mask=attn_mask)
        pooled = self.proj(pooled.transpose(1, 2).reshape(b, 1, d))
        pooled = pooled + self.mlp(self.norm(pooled))
        return pooled[:, 0]


def build_map_pool(config: MapPoolConfig, ctx: BuildContext) -> MapPool:
    """Multi-head attention pooling (SigLIP's MAP head)."""
    width = ctx.num_features or ctx.dim
    inner = ctx.replace(dim=width)
    spec = config.mlp or ctx.mlp
    mlp = inner.build("mlp", spec) if spec is not None else build_mlp(MlpConfig(), inner)
    return MapPool(width, config.num_heads or ctx.num_heads, mlp, config)
