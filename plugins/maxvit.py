"""Built-in plugin: MaxViT (Tu et al., ECCV 2022, arXiv:2204.01697).

A MaxViT block is an MBConv (pre-activation inverted residual with squeeze-excitation) followed by
two pre-norm transformer blocks: **block attention** inside non-overlapping P x P windows (local)
and **grid attention** over a sparse G x G grid spread across the whole map (global, dilated).
Both are the registered ``window`` attention (``mode: block`` / ``mode: grid``) with a learned
relative position bias, so the transformer half is the ordinary registered pre-norm block. The
first MBConv of each stage has stride 2. A conv stem (stride 2) precedes the stages; the head is
global average pooling -> LayerNorm -> (Linear + Tanh pre-logits, as in the reference ImageNet
model) -> Linear.

The defaults follow the released (TensorFlow) models, which are the paper's reference code:
TF "same" padding on strided convs, BatchNorm eps 1e-3, tanh-approximate GELU; with them the
``maxvit-t`` preset computes timm's ``maxvit_tiny_tf_224`` (the faithful port of the official
weights) exactly. There is no separate ``-tf`` preset because the paper's model *is* the TF one;
the options give the PyTorch-style variant for training from scratch.

Every stage map must tile into windows and grids, so the image size must be a multiple of
``total stride x lcm(window, grid)``; this is checked when the spec is validated.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.maxvit_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.conv import MBConv, Padding, make_activation, make_conv2d
from vitzoo.components.hierarchical import (
    HierarchicalConfig,
    HierarchicalModel,
    check_image_divisible,
    check_multiples_of,
    drop_path_schedule,
    map_to_tokens,
    tokens_to_map,
)
from vitzoo.components.layers import maybe_drop_path
from vitzoo.components.windows import WindowAttentionConfig
from vitzoo.config import PositiveFloat, PositiveInt


class MaxVitConfig(HierarchicalConfig):
    """MaxViT: MBConv + block (window) attention + grid attention per block, relative bias."""

    type: Literal["maxvit"] = "maxvit"
    stem_dim: PositiveInt = 64
    dims: list[PositiveInt] = [64, 128, 256, 512]
    depths: list[PositiveInt] = [2, 2, 5, 2]
    head_dim: PositiveInt = 32
    window_size: PositiveInt = 7
    grid_size: PositiveInt = 7
    expand_ratio: PositiveFloat = 4.0
    se_ratio: PositiveFloat = 0.25
    #: The released weights are TensorFlow's (google-research/maxvit, the paper's code), so the
    #: defaults are its conventions: "same" padding on strided convs (asymmetric, (0, 1)),
    #: BatchNorm eps 1e-3 and tanh-approximate GELU (convs and MLP). ``symmetric`` / 1e-5 /
    #: ``gelu`` give the PyTorch-style model (timm's ``maxvit_*_rw`` family uses those).
    padding: Padding = "same"
    bn_eps: PositiveFloat = 1e-3
    activation: Literal["gelu", "gelu-tanh"] = "gelu-tanh"
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0, activation="gelu-tanh")
    block: ComponentSpec("block") = component_default(type="pre-norm", norm_eps=1e-5)
    head_norm: Literal["layernorm", "batchnorm", "none"] = "layernorm"

    @model_validator(mode="after")
    def _rules(self) -> MaxVitConfig:
        self.check_stages(
            stages=("depths",),
            positive=dict(
                stem_dim=self.stem_dim,
                head_dim=self.head_dim,
                window_size=self.window_size,
                grid_size=self.grid_size,
            ),
            heads_divide=False,  # heads = dim / head_dim
        )
        check_multiples_of("dims", self.dims, self.head_dim, "head_dim", "heads = dim / head_dim")
        cell = math.lcm(self.window_size, self.grid_size)
        check_image_divisible(
            self.image_size,
            self.total_stride * cell,
            f"the last stage's map (image / {self.total_stride}) must tile into "
            f"{self.window_size}x{self.window_size} windows and a "
            f"{self.grid_size}x{self.grid_size} grid",
        )
        self.check_children("mlp", "block", image_size=self.image_hw)
        return self

    @property
    def total_stride(self) -> int:
        return 2 ** (len(self.dims) + 1)


class MaxVitBlock(nn.Module):
    """MBConv -> block-attention transformer block -> grid-attention transformer block."""

    def __init__(
        self, conv: nn.Module, local: nn.Module, grid_block: nn.Module, grid: tuple[int, int]
    ) -> None:
        super().__init__()
        self.conv = conv
        self.block_attention = local
        self.grid_attention = grid_block
        self.grid = grid

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        tokens = map_to_tokens(self.conv(fmap))
        tokens = self.grid_attention(self.block_attention(tokens))
        return tokens_to_map(tokens, self.grid)


class MaxVit(HierarchicalModel):
    """MaxViT (MBConv + block attention + grid attention)."""

    def __init__(self, config: MaxVitConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            make_conv2d(config.in_chans, config.stem_dim, 3, 2, padding=config.padding),
            nn.BatchNorm2d(config.stem_dim, eps=config.bn_eps),
            make_activation(config.activation, inplace=True),
            make_conv2d(config.stem_dim, config.stem_dim, 3, 1, padding=config.padding),
        )
        rates = drop_path_schedule(config.drop_path_rate, config.depths)
        h, w = config.image_hw[0] // 2, config.image_hw[1] // 2
        stages, in_dim = [], config.stem_dim
        for i, dim in enumerate(config.dims):
            h, w = h // 2, w // 2
            blocks = []
            for j, rate in enumerate(rates[i]):
                conv = MBConv(
                    in_dim if j == 0 else dim,
                    dim,
                    stride=2 if j == 0 else 1,
                    expand_ratio=config.expand_ratio,
                    expand_from="out",
                    activation=config.activation,
                    se_channels=max(1, int(dim * config.se_ratio)),
                    se_activation="silu",
                    pre_norm=True,
                    drop_path=maybe_drop_path(rate),
                    padding=config.padding,
                    bn_eps=config.bn_eps,
                )
                attn = [
                    ctx.build(
                        "block",
                        config.block,
                        dim=dim,
                        num_heads=dim // config.head_dim,
                        grid=(h, w),
                        num_prefix_tokens=0,
                        layer_index=sum(config.depths[:i]) + j,
                        drop_path=rate,
                        attention=WindowAttentionConfig(
                            window_size=size, mode=mode, head_dim=config.head_dim
                        ),
                        mlp=config.mlp,
                    )
                    for mode, size in (("block", config.window_size), ("grid", config.grid_size))
                ]
                blocks.append(MaxVitBlock(conv, attn[0], attn[1], (h, w)))
            stages.append(nn.Sequential(*blocks))
            in_dim = dim
        self.stages = nn.ModuleList(stages)
        self.init_tail(config, ctx, config.dims[-1])

    def run_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem on a channels-last copy of the image, so every map after it is channels-last.

        Why (profiled, issue 12): on CPU oneDNN runs channels-last convolutions natively, while
        NCHW ones pay a layout reorder of input and output per call -- MaxViT-T's 1x1 and
        depthwise convs ran 2-4x faster channels-last (whole model 1.35x at batch 16). And a
        channels-last map *is* the (B, H*W, C) token sequence, so ``map_to_tokens`` /
        ``tokens_to_map`` between the MBConv and the attention halves become free views instead
        of transposed tensors that every LayerNorm and residual add had to copy. Values are
        unchanged (the same function; float32 results differ only by summation order, ~1e-7).
        """
        return self.stem(x.contiguous(memory_format=torch.channels_last))


TINY: dict[str, Any] = {
    "image_size": 32,
    "stem_dim": 16,
    "dims": [16, 32],
    "depths": [1, 1],
    "head_dim": 8,
    "window_size": 2,
    "grid_size": 2,
    "num_classes": 10,
}


@hookimpl
def register_architectures(register: Any) -> None:
    register("maxvit", MaxVit, MaxVitConfig, tags={"image", "feature-maps"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "maxvit")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
