"""Built-in plugin: DeepViT (Zhou et al., 2021, arXiv:2103.11886) -- re-attention.

Re-attention regenerates each layer's attention maps as a learned combination of the heads'
maps, ``Norm(Theta^T softmax(q k^T / sqrt(d)))``, which the paper shows keeps deep ViTs from
"attention collapse" (maps becoming identical across layers). It is registered as an attention
component (``re-attention``), so any spec can use it; the ``deepvit`` architecture is only a ViT
whose default attention is re-attention and whose MLP ratio is the paper's 3.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.examples import TINY_VIT
from vitzoo.components.head_mixing import HeadMix
from vitzoo.components.vit import VitConfig, build_vit

TINY = TINY_VIT


class ReAttentionConfig(MhsaConfig):
    """Re-attention: a learned heads x heads map over the softmax weights, then a norm over heads.

    ``norm: batch`` is the paper's official choice (BatchNorm over the head channels); ``layer``
    normalises across heads per position (vit-pytorch's variant) and keeps samples independent.
    """

    type: Literal["re-attention"] = "re-attention"
    norm: Literal["batch", "layer", "none"] = "batch"


class ReAttention(MultiHeadAttention):
    """Multi-head attention whose softmax weights are re-mixed across heads and normalised."""

    needs_matrix = True

    def __init__(self, dim: int, num_heads: int, config: ReAttentionConfig) -> None:
        super().__init__(dim, num_heads, config)
        self.reattn = HeadMix(self.num_heads, bias=True)
        self.norm_kind = config.norm
        if config.norm == "batch":
            self.reattn_norm: nn.Module = nn.BatchNorm2d(self.num_heads)
        elif config.norm == "layer":
            self.reattn_norm = nn.LayerNorm(self.num_heads)
        else:
            self.reattn_norm = nn.Identity()

    def transform_weights(self, weights: torch.Tensor) -> torch.Tensor:
        mixed = self.reattn(weights)
        if self.norm_kind == "layer":
            return self.reattn_norm(mixed.movedim(1, -1)).movedim(-1, 1)
        return self.reattn_norm(mixed)


def build_re_attention(config: ReAttentionConfig, ctx: BuildContext) -> ReAttention:
    """Re-attention (DeepViT)."""
    return ReAttention(ctx.dim, ctx.num_heads, config)


class DeepVitConfig(VitConfig):
    """DeepViT: a ViT with re-attention in every block and MLP ratio 3 (the paper's 16B/24B/32B)."""

    type: Literal["deepvit"] = "deepvit"
    attention: ComponentSpec("attention") = component_default(type="re-attention", qkv_bias=True)
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=3.0)


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "re-attention",
        build_re_attention,
        ReAttentionConfig,
        tags={"mask", "needs-matrix"},
        summary="DeepViT re-attention: learned head mixing of the softmax maps + norm over heads",
        example={"config": {}, "model": {}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register("deepvit", build_vit, DeepVitConfig, tags={"image", "tokens"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "deepvit")
