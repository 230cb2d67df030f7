"""Built-in plugin: DeepViT (Zhou et al., 2021, arXiv:2103.11886) -- re-attention.

Re-attention regenerates each layer's attention maps as a learned combination of the heads'
maps, ``Norm(Theta^T softmax(q k^T / sqrt(d)))``, which the paper shows keeps deep ViTs from
"attention collapse" (maps becoming identical across layers). It is registered as an attention
component (``re-attention``), so any spec can use it; the ``deepvit`` architecture is only a ViT
whose default attention is re-attention and whose MLP ratio is the paper's 3.

The authors' released DeepViT-S / DeepViT-L add three things, each a registered part here:
re-attention only in the last blocks (``transform_from_layer``) with an optional extra scale of
the re-mixed map (``transform_scale``); a block that runs on ``scale_adjustment * x`` and divides
its branches by it (``deepvit`` block); and a convolutional patch stem (``deepvit-conv-stem``:
two conv-BN-ReLU layers at stride 2, then a patch conv), which the code says follows T2T.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.block import PreNormBlock, PreNormBlockConfig
from vitzoo.components.context import BuildContext
from vitzoo.components.conv import ConvNormAct
from vitzoo.components.head_mixing import HeadMix
from vitzoo.components.patchify import Patchifier, check_divisible
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import NonNegativeInt, PositiveFloat, PositiveInt
from vitzoo.registration_examples import TINY_VIT

TINY = TINY_VIT


class ReAttentionConfig(MhsaConfig):
    """Re-attention: a learned heads x heads map over the softmax weights, then a norm over heads.

    ``norm: batch`` is the paper's official choice (BatchNorm over the head channels); ``layer``
    normalises across heads per position (vit-pytorch's variant) and keeps samples independent.
    """

    type: Literal["re-attention"] = "re-attention"
    norm: Literal["batch", "layer", "none"] = "batch"
    #: Blocks before this (0-based) layer index use plain attention: no head mixing, no norm
    #: (the released DeepViT-S re-attends in its last 5 of 16 blocks, DeepViT-L in 12 of 32).
    transform_from_layer: NonNegativeInt = 0
    #: Multiply the re-mixed, normalised map by head_dim**-0.5 (the released DeepViT-S).
    transform_scale: bool = False


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
        self.map_scale = self.head_dim**-0.5 if config.transform_scale else 1.0

    def transform_weights(self, weights: torch.Tensor) -> torch.Tensor:
        mixed = self.reattn(weights)
        if self.norm_kind == "layer":
            return self.reattn_norm(mixed.movedim(1, -1)).movedim(-1, 1) * self.map_scale
        return self.reattn_norm(mixed) * self.map_scale


def build_re_attention(config: ReAttentionConfig, ctx: BuildContext) -> MultiHeadAttention:
    """Re-attention (DeepViT); plain attention before ``transform_from_layer``."""
    if ctx.layer_index < config.transform_from_layer:
        return MultiHeadAttention(ctx.dim, ctx.num_heads, config)
    return ReAttention(ctx.dim, ctx.num_heads, config)


class DeepVitBlockConfig(PreNormBlockConfig):
    """The released DeepViT block: branches see ``scale_adjustment * x`` and are divided by it."""

    type: Literal["deepvit"] = "deepvit"  # type: ignore[assignment]
    scale_adjustment: PositiveFloat = 1.0


class DeepVitBlock(PreNormBlock):
    """DeepViT block with scale adjustment.

    ``x + f(norm(a x)) / a`` for both branches (a = ``scale_adjustment``): with a < 1 the
    residual branches are amplified by 1/a and the norms see a smaller epsilon, relatively."""

    def __init__(self, config: DeepVitBlockConfig, ctx: BuildContext) -> None:
        super().__init__(config, ctx)
        self.scale = config.scale_adjustment

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        a = self.scale
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x * a), mask=mask))) / a
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x * a)))) / a


class DeepVitConvStemConfig(ComponentConfig):
    """DeepViT-S/L stem: conv7x7/2-BN-ReLU (64), conv3x3-BN-ReLU (64), conv (patch/2)/(patch/2)."""

    type: Literal["deepvit-conv-stem"] = "deepvit-conv-stem"
    patch_size: PositiveInt = 16
    hidden_channels: PositiveInt = 64

    def check(self, image_size: Any = None, **_: Any) -> None:
        if self.patch_size < 2 or self.patch_size % 2:
            raise SpecValueError(
                "patch_size", f"must be an even number >= 2, got {self.patch_size}"
            )
        if image_size is not None:
            check_divisible(image_size, self.patch_size)


class DeepVitConvStem(Patchifier):
    def __init__(self, in_chans: int, dim: int, config: DeepVitConvStemConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        hidden, half = config.hidden_channels, config.patch_size // 2
        self.proj = nn.Sequential(
            ConvNormAct(in_chans, hidden, 7, 2, activation="relu", padding=3),
            ConvNormAct(hidden, hidden, 3, 1, activation="relu", padding=1),
            nn.Conv2d(hidden, dim, half, half),
        )

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // self.patch_size for s in image_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 4:
            raise ValueError(f"deepvit-conv-stem expects images (B, C, H, W), got {tuple(x.shape)}")
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


def build_deepvit_conv_stem(config: DeepVitConvStemConfig, ctx: BuildContext) -> DeepVitConvStem:
    """DeepViT-S/L convolutional patch stem."""
    return DeepVitConvStem(ctx.in_chans, ctx.dim, config)


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
def register_blocks(register: Any) -> None:
    register(
        "deepvit",
        DeepVitBlock,
        DeepVitBlockConfig,
        example={"config": {"scale_adjustment": 0.5}, "model": {}},
    )


@hookimpl
def register_patchifiers(register: Any) -> None:
    register(
        "deepvit-conv-stem",
        build_deepvit_conv_stem,
        DeepVitConvStemConfig,
        tags={"image"},
        example={"config": {"patch_size": 8, "hidden_channels": 8}, "model": {}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register("deepvit", VisionTransformer, DeepVitConfig, tags={"image", "tokens"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "deepvit")
