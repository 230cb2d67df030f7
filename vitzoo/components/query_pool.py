"""``query-attention`` pooling: a learned query attends to an image's tokens through the model's
own attention, with a residual -- NaViT's pooling (Dehghani et al., 2023; vit-pytorch ``NaViT``'s
``attn_pool_queries`` + ``attn_pool``).

``pooled = query + attention(norm(query), tokens)``: the query is normalised (the attention's
pre-norm), projected to queries with the attention's query weights; the tokens (not normalised:
they left the encoder's final norm) are projected with its key and value weights; query/key norm,
heads and output projection are the attention's own. The attention is a registered ``mhsa``
built from the model's ``attention`` spec unless the pooling names one, so NaViT's pooling
computes with the same per-head qk-norm as its blocks.

Unlike the ``map`` pooling (SigLIP's head: a probe, an attention without a residual to the probe,
then a residual MLP), there is no MLP and the query itself is the residual. A boolean key-padding
``mask`` (B, N) (True = attend) keeps padding out, so a packed batch pools each image from its
own tokens.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.norms import OptionalNorm, make_optional_norm
from vitzoo.components.pooling import pooled_tokens
from vitzoo.config import ComponentConfig, ComponentSpec, PositiveFloat, SpecValueError


class QueryPoolConfig(ComponentConfig):
    """A learned query attends to the tokens through an mhsa attention, plus the query (NaViT)."""

    type: Literal["query-attention"] = "query-attention"
    #: The cross-attention; default: the model's ``attention`` spec (it must be ``mhsa``).
    attention: ComponentSpec("attention") | None = None
    #: Norm of the query before the attention (vit-pytorch's NaViT: LayerNorm without bias).
    norm: OptionalNorm = "layernorm"
    norm_eps: PositiveFloat = 1e-5
    #: Let the query read the prefix (class / register) tokens too.
    include_prefix: bool = False

    def check(self, attention: Any = None, **_: Any) -> None:
        spec = self.attention if self.attention is not None else attention
        if spec is not None and getattr(spec, "type", "mhsa") != "mhsa":
            raise SpecValueError(
                "attention",
                f"query-attention pooling cross-attends with an mhsa attention; got "
                f"{spec.type!r} (set pool.attention: {{type: mhsa, ...}})",
            )


class QueryAttentionPool(nn.Module):
    """``forward(tokens (B, N, D), num_prefix_tokens, mask=None) -> (B, D)``."""

    def __init__(self, dim: int, attention: MultiHeadAttention, config: QueryPoolConfig) -> None:
        super().__init__()
        self.include_prefix = config.include_prefix
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = make_optional_norm(config.norm, dim, config.norm_eps)
        self.attn = attention
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(
        self, tokens: torch.Tensor, num_prefix_tokens: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        tokens, mask = pooled_tokens(tokens, mask, num_prefix_tokens, self.include_prefix)
        query = self.query.expand(tokens.shape[0], -1, -1)
        return (query + cross_attend(self.attn, self.norm(query), tokens, mask))[:, 0]


def cross_attend(
    attn: MultiHeadAttention,
    queries: torch.Tensor,
    context: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``attn`` with queries from ``queries`` (B, M, D) and keys / values from ``context``
    (B, N, D): its fused q, k, v weights and biases split, its qk-norm, heads, logit scaling
    (``attend``: cosine too) and output projection."""
    inner = attn.num_heads * attn.head_dim
    weight, bias = attn.qkv.weight, attn.in_bias()
    q = F.linear(queries, weight[:inner], None if bias is None else bias[:inner])
    kv = F.linear(context, weight[inner:], None if bias is None else bias[inner:])
    b, m, _ = queries.shape
    n = context.shape[1]
    q = q.reshape(b, m, attn.num_heads, attn.head_dim).transpose(1, 2)
    k, v = kv.reshape(b, n, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.merge_heads(attn.attend(attn.q_norm(q), attn.k_norm(k), v, mask))


def build_query_pool(config: QueryPoolConfig, ctx: BuildContext) -> QueryAttentionPool:
    """Query-attention pooling (NaViT)."""
    width = ctx.num_features or ctx.dim
    spec = config.attention or ctx.attention or MhsaConfig()
    attention = ctx.replace(dim=width).build("attention", spec)
    if type(attention) is not MultiHeadAttention:
        raise SpecValueError("attention", "query-attention pooling needs a plain mhsa attention")
    return QueryAttentionPool(width, attention, config)
