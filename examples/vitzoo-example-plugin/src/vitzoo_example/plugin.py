"""Cosine attention: attention logits are cosine similarities times a learned temperature.

Query and key vectors are L2-normalised, so every logit lies in [-1, 1] before scaling; a
per-head temperature (learned in log space, capped) sets how peaked the softmax can get. This is
the scaled cosine attention of Swin Transformer V2 (Liu et al., 2022, arXiv:2111.09883, Sec. 3.2),
which keeps attention logits bounded in large or long-trained models.

The plugin reuses vitzoo's ``MultiHeadAttention`` (projections, heads, output) and computes the
weights through ``attend``, so masks, attention maps (``vitzoo.introspection``) and dropout work
exactly as for every built-in attention.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

import vitzoo
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.config import PositiveFloat


class CosineAttentionConfig(MhsaConfig):
    """Multi-head attention on cosine similarities with a learned per-head temperature."""

    type: Literal["cosine"] = "cosine"
    init_temperature: PositiveFloat = 10.0
    max_temperature: PositiveFloat = 100.0

    @model_validator(mode="after")
    def _temperatures(self) -> CosineAttentionConfig:
        if self.init_temperature <= 0:
            raise vitzoo.SpecValueError(
                "init_temperature", f"must be > 0, got {self.init_temperature}"
            )
        if self.max_temperature < self.init_temperature:
            raise vitzoo.SpecValueError(
                "max_temperature",
                f"must be >= init_temperature ({self.init_temperature}), got {self.max_temperature}",
            )
        return self


class CosineAttention(MultiHeadAttention):
    """``softmax(tau_h * cos(q, k)) v`` with ``tau_h = min(exp(log_tau_h), max_temperature)``."""

    def __init__(self, dim: int, num_heads: int, config: CosineAttentionConfig) -> None:
        super().__init__(dim, num_heads, config)
        self.log_temperature = nn.Parameter(
            torch.full((self.num_heads, 1, 1), math.log(config.init_temperature))
        )
        self.max_log_temperature = math.log(config.max_temperature)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        temperature = self.log_temperature.clamp(max=self.max_log_temperature).exp()
        return self.merge_heads(self.attend(q, k, v, mask, scale=temperature.to(q.dtype)))


def build_cosine_attention(config: CosineAttentionConfig, ctx: BuildContext) -> CosineAttention:
    """Scaled cosine attention (Swin V2) with a learned per-head temperature."""
    return CosineAttention(ctx.dim, ctx.num_heads, config)


@vitzoo.hookimpl
def register_attention(register: Any) -> None:
    register(
        "cosine",
        build_cosine_attention,
        CosineAttentionConfig,
        tags={"mask"},
        # The conformance suite slots it into its tiny ViT host with these overrides.
        example={"config": {"init_temperature": 10.0}},
    )
