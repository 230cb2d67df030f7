"""Built-in plugin: Compact Convolutional Transformers (Hassani et al., 2021, arXiv:2104.05704).

Registered separately so other specs can use them:

* patchifier ``conv-tokenizer``: n x (conv -> ReLU -> max-pool); 2D for images, 3D (``spatial_dims:
  3``) for video/volumes. Convolutions carry position, so ``posenc: none`` also works;
* pooling ``seq-pool``: sequence pooling, an attention-weighted average of the output tokens
  (a learned score per token, softmax over the sequence), replacing the class token;
* block ``cct``: CCT's encoder layer, x = norm1(x + attn(pre_norm(x))); x = x + mlp(x) (the
  second norm sits on the residual stream, unlike the pre-norm ViT block).

The ``cct`` architecture is the ViT base with those defaults (no class token, no qkv bias). Its
presets cover CCT-7/3x1 and CCT-14/7x2 and the paper's ViT-Lite-7/4 baseline.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.cct_weights import CONVERTERS

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.layers import maybe_drop_path, maybe_layer_scale, to_pair
from vitzoo.components.patchify import Patchifier
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import (
    NonNegativeInt,
    NonNegativeIntOrTuple,
    PositiveFloat,
    PositiveInt,
    PositiveIntOrTuple,
    Rate,
    SizeOrPair,
)

TINY = {
    "image_size": 32,
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "conv-tokenizer", "kernel_size": 3, "stride": 2, "padding": 1},
}


# -- convolutional tokenizer --------------------------------------------------------------------
Size = PositiveIntOrTuple


class ConvTokenizerConfig(ComponentConfig):
    """CCT tokenizer: ``num_layers`` x (conv -> ReLU -> max-pool), the last conv giving ``dim``.

    Sizes are an int (same on every axis) or one value per axis; ``spatial_dims: 3`` makes it a
    video/volume tokenizer (Conv3d / MaxPool3d; per-axis sizes are (t, h, w)).
    """

    type: Literal["conv-tokenizer"] = "conv-tokenizer"
    spatial_dims: Literal[2, 3] = 2
    num_layers: PositiveInt = 1
    hidden_channels: PositiveInt = 64
    kernel_size: Size = 3
    stride: Size = 1
    padding: NonNegativeIntOrTuple = 1
    max_pool: bool = True
    pool_kernel_size: Size = 3
    pool_stride: Size = 2
    pool_padding: NonNegativeIntOrTuple = 1
    conv_bias: bool = False
    activation: Literal["relu", "none"] = "relu"

    def sizes(self, name: str) -> tuple[int, ...]:
        value = getattr(self, name)
        sizes = to_pair(value, self.spatial_dims)
        if len(sizes) != self.spatial_dims:
            raise SpecValueError(
                name, f"needs {self.spatial_dims} values (one per axis) or one int, got {value}"
            )
        return sizes

    def output_grid(self, input_size: tuple[int, ...]) -> tuple[int, ...]:
        """Token grid for an input size (the conv / pool output arithmetic)."""

        def out(size: int, k: int, s: int, p: int) -> int:
            return (size + 2 * p - k) // s + 1

        grid = tuple(input_size)
        conv = zip(
            self.sizes("kernel_size"), self.sizes("stride"), self.sizes("padding"), strict=True
        )
        conv = list(conv)
        pool = list(
            zip(
                self.sizes("pool_kernel_size"),
                self.sizes("pool_stride"),
                self.sizes("pool_padding"),
                strict=True,
            )
        )
        for _ in range(self.num_layers):
            grid = tuple(out(g, *c) for g, c in zip(grid, conv, strict=True))
            if self.max_pool:
                grid = tuple(out(g, *p) for g, p in zip(grid, pool, strict=True))
        return grid

    def check(self, image_size: Any = None, spatial_dims: int | None = None, **_: Any) -> None:
        if self.num_layers < 1:
            raise SpecValueError("num_layers", f"must be >= 1, got {self.num_layers}")
        if self.hidden_channels < 1:
            raise SpecValueError("hidden_channels", "must be >= 1")
        for name in (
            "kernel_size",
            "stride",
            "padding",
            "pool_kernel_size",
            "pool_stride",
            "pool_padding",
        ):
            self.sizes(name)
        if self.max_pool:
            for k, p in zip(
                self.sizes("pool_kernel_size"), self.sizes("pool_padding"), strict=True
            ):
                if 2 * p > k:
                    raise SpecValueError(
                        "pool_padding",
                        f"max-pool padding {p} is more than half the pool kernel {k}; "
                        f"allowed: 0 to {k // 2}",
                    )
        if spatial_dims is not None and spatial_dims != self.spatial_dims:
            raise SpecValueError(
                "spatial_dims",
                f"the model's input has {spatial_dims} spatial axes; allowed: {spatial_dims}",
            )
        if image_size is not None:
            size = to_pair(image_size, self.spatial_dims)
            grid = self.output_grid(size)
            if min(grid) < 1:
                raise SpecValueError(
                    "num_layers",
                    f"input {tuple(size)} shrinks to an empty token grid {grid}; "
                    "use fewer layers, smaller strides or a larger input",
                )


class ConvTokenizer(Patchifier):
    def __init__(self, config: ConvTokenizerConfig, in_chans: int, dim: int) -> None:
        super().__init__()
        self.config = config
        self.spatial_dims = config.spatial_dims
        conv = nn.Conv2d if config.spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if config.spatial_dims == 2 else nn.MaxPool3d
        widths = [in_chans] + [config.hidden_channels] * (config.num_layers - 1) + [dim]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(
                conv(
                    c_in,
                    c_out,
                    kernel_size=config.sizes("kernel_size"),
                    stride=config.sizes("stride"),
                    padding=config.sizes("padding"),
                    bias=config.conv_bias,
                )
            )
            if config.activation == "relu":
                layers.append(nn.ReLU())
            if config.max_pool:
                layers.append(
                    pool(
                        kernel_size=config.sizes("pool_kernel_size"),
                        stride=config.sizes("pool_stride"),
                        padding=config.sizes("pool_padding"),
                    )
                )
        self.layers = nn.Sequential(*layers)
        for module in self.layers:
            if isinstance(module, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(module.weight)

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return self.config.output_grid(tuple(image_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 2 + self.spatial_dims:
            kind = "images (B, C, H, W)" if self.spatial_dims == 2 else "videos (B, C, T, H, W)"
            raise ValueError(f"conv-tokenizer expects {kind}, got shape {tuple(x.shape)}")
        x = self.layers(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


def build_conv_tokenizer(config: ConvTokenizerConfig, ctx: BuildContext) -> ConvTokenizer:
    """CCT convolutional tokenizer."""
    return ConvTokenizer(config, ctx.in_chans, ctx.dim)


# -- sequence pooling ---------------------------------------------------------------------------
class SeqPoolConfig(ComponentConfig):
    """Sequence pooling: softmax(Linear(tokens)) over the sequence, then the weighted average."""

    type: Literal["seq-pool"] = "seq-pool"


class SeqPool(nn.Module):
    """Pools every output token (prefix tokens included, if the model has any).

    The score layer has no bias: a constant added to every score cancels in the softmax, so the
    reference implementation's bias is a parameter that never receives a gradient.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)

    def weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N) importance weights that sum to 1 over the sequence."""
        return self.score(tokens).squeeze(-1).softmax(dim=-1)

    def forward(self, tokens: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return torch.einsum("bn,bnd->bd", self.weights(tokens), tokens)


def build_seq_pool(config: SeqPoolConfig, ctx: BuildContext) -> SeqPool:
    """Sequence pooling (CCT)."""
    return SeqPool(ctx.num_features or ctx.dim)


# -- CCT encoder layer --------------------------------------------------------------------------
class CctBlockConfig(ComponentConfig):
    """CCT encoder layer: x = norm1(x + attn(pre_norm(x))); x = x + mlp(x)."""

    type: Literal["cct"] = "cct"
    layer_scale: PositiveFloat | None = None
    norm_eps: PositiveFloat = 1e-5


class CctBlock(nn.Module):
    """CCT encoder layer."""

    def __init__(self, config: CctBlockConfig, ctx: BuildContext) -> None:
        super().__init__()
        dim = ctx.dim
        self.pre_norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = ctx.build("attention", ctx.attention)
        self.ls1 = maybe_layer_scale(dim, config.layer_scale)
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = ctx.build("mlp", ctx.mlp)
        self.ls2 = maybe_layer_scale(dim, config.layer_scale)
        self.drop_path = maybe_drop_path(ctx.drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.drop_path(self.ls1(self.attn(self.pre_norm(x), mask=mask))))
        return x + self.drop_path(self.ls2(self.mlp(x)))


# -- the CCT architecture -----------------------------------------------------------------------
class CctConfig(VitConfig):
    """CCT (defaults: CCT-7/3x1 for 32 px CIFAR): conv tokenizer, no class token, sequence pooling."""

    type: Literal["cct"] = "cct"
    image_size: SizeOrPair = 32
    num_classes: NonNegativeInt = 10
    dim: PositiveInt = 256
    depth: PositiveInt = 7
    num_heads: PositiveInt = 4
    patch: ComponentSpec("patchifier") = component_default(type="conv-tokenizer")
    attention: ComponentSpec("attention") = component_default(
        type="mhsa", qkv_bias=False, attn_drop=0.1
    )
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=2.0)
    block: ComponentSpec("block") = component_default(type="cct")
    pool: ComponentSpec("pooling") = component_default(type="seq-pool")
    class_token: bool = False
    drop_path_rate: Rate = 0.1
    norm_eps: PositiveFloat = 1e-5


@hookimpl
def register_patchifiers(register: Any) -> None:
    register(
        "conv-tokenizer",
        build_conv_tokenizer,
        ConvTokenizerConfig,
        # No image/video tag (a tag becomes a need): it takes images (spatial_dims 2) and
        # videos/volumes (3), and its check() matches spatial_dims to the host's input.
        tags={"conv"},
        example={"config": {"kernel_size": 3, "stride": 2, "padding": 1, "hidden_channels": 16}},
    )


@hookimpl
def register_pooling(register: Any) -> None:
    register(
        "seq-pool",
        build_seq_pool,
        SeqPoolConfig,
        offers={"pooled-vector"},
        example={"config": {}, "model": {}},
    )


@hookimpl
def register_blocks(register: Any) -> None:
    register("cct", CctBlock, CctBlockConfig, tags={"mask"}, example={"config": {}})


@hookimpl
def register_architectures(register: Any) -> None:
    register("cct", VisionTransformer, CctConfig, tags={"image", "tokens"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "cct")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
