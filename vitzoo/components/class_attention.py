"""Class attention (CaiT, Touvron et al. 2021): only the class token queries, every token answers.

Used by CaiT's class-attention stage, XCiT's final layers and CrossViT's cross-branch fusion
(where the "class token" is the other branch's projected class token). It returns (B, 1, D), so it
is a shared module rather than a registered attention component (those keep the sequence length).
The block around it keeps the length (patch tokens pass through), so the core registers that as
the ``class-attention`` block, for any architecture whose class token enters late.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.layers import maybe_drop_path, maybe_layer_scale
from vitzoo.config import ComponentConfig, PositiveFloat, SpecValueError


class ClassAttention(MultiHeadAttention):
    """softmax(q_cls k^T) v: the first token's query against all keys; output (B, 1, D).

    Keeps MHSA's parameters (one fused ``qkv`` projection, the same count as separate q, k, v
    maps) but projects a query for the class token alone, so a layer costs O(N), not O(N^2).
    ``mask`` is a (B, N) key-padding mask (True = attend).
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None and mask.ndim != 2:
            raise ValueError("class attention takes a (B, N) key-padding mask")
        b, n, _ = x.shape
        inner = self.num_heads * self.head_dim
        weight, bias = self.qkv.weight, self.in_bias()
        q = F.linear(x[:, :1], weight[:inner], None if bias is None else bias[:inner])
        kv = F.linear(x, weight[inner:], None if bias is None else bias[inner:])
        q = self.q_norm(q.reshape(b, 1, self.num_heads, self.head_dim).transpose(1, 2))
        k, v = kv.reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.merge_heads(self.attend(q, self.k_norm(k), v, mask))


class ClassAttentionBlock(nn.Module):
    """cls += ls1(CA(norm1([cls, patches]))); cls += ls2(mlp(norm2(cls))); patches pass through.

    The MLP is the registered ``ctx.mlp``; ``attention`` gives the projection options (bias,
    qk-norm, dropouts) and defaults to plain ``mhsa`` settings.
    """

    def __init__(
        self,
        ctx: BuildContext,
        attention: MhsaConfig | None = None,
        layer_scale: float | None = None,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        dim = ctx.dim
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = ClassAttention(dim, ctx.num_heads, attention or MhsaConfig())
        self.ls1 = maybe_layer_scale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = ctx.build("mlp", ctx.mlp)
        self.ls2 = maybe_layer_scale(dim, layer_scale)
        self.drop_path = maybe_drop_path(ctx.drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` is [cls, patches...] (B, 1 + N, D); returns it with only the class token updated."""
        cls = x[:, :1]
        cls = cls + self.drop_path(self.ls1(self.attn(self.norm1(x), mask=mask)))
        cls = cls + self.drop_path(self.ls2(self.mlp(self.norm2(cls))))
        return torch.cat([cls, x[:, 1:]], dim=1)


class ClassAttentionBlockConfig(ComponentConfig):
    """Class-attention block: cls += CA(norm([cls, patches])); cls += MLP(norm(cls)).

    Patch tokens are returned unchanged. Needs a class token in front of the sequence.
    """

    type: Literal["class-attention"] = "class-attention"
    attention: MhsaConfig = MhsaConfig()
    layer_scale: PositiveFloat | None = None
    norm_eps: PositiveFloat = 1e-6

    def check(self, class_token: bool = True, **_: Any) -> None:
        if not class_token:
            raise SpecValueError(
                "type", "the class-attention block needs a class token; set class_token: true"
            )


def build_class_attention_block(
    config: ClassAttentionBlockConfig, ctx: BuildContext
) -> ClassAttentionBlock:
    """Class-attention block (CaiT, XCiT)."""
    return ClassAttentionBlock(ctx, config.attention, config.layer_scale, config.norm_eps)
