"""Built-in plugin: XCiT (El-Nouby et al. 2021, "XCiT: Cross-Covariance Image Transformers",
arXiv:2106.09681).

Registered parts, each usable on its own in other models:

* ``xca`` attention: cross-covariance attention. Queries and keys are L2-normalised along the token
  axis and attention runs between *channels*: softmax(tau * q^T k) is a (d x d) matrix per head, so
  cost is linear in the token count. tau is a learned per-head temperature.
* ``xcit`` block: x += XCA(LN x); x += LPI(LN x) (local patch interaction: depthwise 3x3 conv,
  GELU, BatchNorm, depthwise 3x3 conv on the token grid); x += MLP(LN x), each with LayerScale.
* ``xcit-stem`` patchifier: log2(patch) stride-2 3x3 conv + BatchNorm layers (GELU between).
* ``fourier`` positions: the official DETR-style Fourier table (coordinates 1..H scaled to
  (0, 2*pi], 32 interleaved sin/cos frequencies per axis, y then x) mapped to the width by a
  learned linear layer (the official code's 1x1 conv).
* ``xcit-class-attention`` block: the released class-attention layer, which (unlike CaiT's)
  also updates the patch tokens and, with ``tokens_norm``, normalises the whole stream.
* ``xcit`` architecture: the shared late-class-token model that CaiT uses too (stem -> positions
  -> blocks on patch tokens -> late class token -> class-attention blocks -> norm -> head) with the
  parts above as defaults; the structure and CaiT's class-attention parts live once, in the core
  (:mod:`vitzoo.components.late_class_token`), so this plugin does not need the ``cait`` plugin.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.xcit_weights import CONVERTERS

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.class_attention import ClassAttentionBlock, ClassAttentionBlockConfig
from vitzoo.components.context import BuildContext
from vitzoo.components.conv import ConvNormAct
from vitzoo.components.grid import FollowsGrid
from vitzoo.components.late_class_token import LateClassTokenConfig, LateClassTokenTransformer
from vitzoo.components.layers import (
    maybe_drop_path,
    maybe_layer_scale,
)
from vitzoo.components.patchify import Patchifier, check_divisible
from vitzoo.config import PositiveFloat, PositiveInt
from vitzoo.registration_examples import TINY_VIT


# ---------------------------------------------------------------------------------------------
# Cross-covariance attention
# ---------------------------------------------------------------------------------------------
class XcaConfig(MhsaConfig):
    """Cross-covariance attention: channel-to-channel attention, linear in the token count."""

    type: Literal["xca"] = "xca"  # type: ignore[assignment]


class CrossCovarianceAttention(MultiHeadAttention):
    """MHSA's projections; weights softmax(tau * norm(q)^T norm(k)) over channels (d x d).

    A (B, N) key-padding mask removes padded tokens from the covariances. The stored attention map
    (``record_attention``) is the (B, heads, d, d) channel map.
    """

    def __init__(self, dim: int, num_heads: int, config: XcaConfig) -> None:
        super().__init__(dim, num_heads, config)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None and mask.ndim != 2:
            raise ValueError("cross-covariance attention takes a (B, N) token padding mask")
        q, k, v = (t.transpose(-2, -1) for t in self.split_heads(x))  # (B, H, d, N)
        if mask is not None:
            keep = mask[:, None, None, :].to(q.dtype)
            q, k, v = q * keep, k * keep, v * keep
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        out = self.attend(q, k, v, scale=self.temperature)  # (B, H, d, N)
        return self.merge_heads(out.transpose(-2, -1))


def build_xca(config: XcaConfig, ctx: BuildContext) -> CrossCovarianceAttention:
    """Cross-covariance attention (XCiT)."""
    return CrossCovarianceAttention(ctx.dim, ctx.num_heads, config)


# ---------------------------------------------------------------------------------------------
# Local patch interaction and the XCiT block
# ---------------------------------------------------------------------------------------------
class LocalPatchInteraction(nn.Module):
    """Depthwise conv -> GELU -> BatchNorm -> depthwise conv over the (h, w) token grid."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        b, n, d = tokens.shape
        x = tokens.transpose(1, 2).reshape(b, d, *grid)
        x = self.conv2(self.bn(self.act(self.conv1(x))))
        return x.reshape(b, d, n).transpose(1, 2)


class XcitBlockConfig(ComponentConfig):
    """x += attn(LN x); x += LPI(LN x); x += MLP(LN x); LayerScale on each branch."""

    type: Literal["xcit"] = "xcit"
    layer_scale: PositiveFloat | None = 1.0
    local_kernel: PositiveInt = 3
    norm_eps: PositiveFloat = 1e-6

    def check(self, spatial_dims: int = 2, **_: Any) -> None:
        if spatial_dims != 2:
            raise SpecValueError("type", "the xcit block's local patch interaction needs a 2D grid")
        if self.local_kernel < 1 or self.local_kernel % 2 == 0:
            raise SpecValueError("local_kernel", f"must be odd and >= 1, got {self.local_kernel}")


class XcitBlock(FollowsGrid, nn.Module):
    """XCiT block (XCA + local patch interaction + MLP).

    The XCiT layer. Prefix tokens (if any) skip the local patch interaction.
    """

    def __init__(self, config: XcitBlockConfig, ctx: BuildContext) -> None:
        super().__init__()
        dim, eps, ls = ctx.dim, config.norm_eps, config.layer_scale
        if len(ctx.grid) != 2:
            raise ValueError("the xcit block needs a 2D token grid")
        self.grid = tuple(ctx.grid)
        self.num_prefix = ctx.num_prefix_tokens
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = ctx.build("attention", ctx.attention)
        self.ls1 = maybe_layer_scale(dim, ls)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.local = LocalPatchInteraction(dim, config.local_kernel)
        self.ls3 = maybe_layer_scale(dim, ls)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = ctx.build("mlp", ctx.mlp)
        self.ls2 = maybe_layer_scale(dim, ls)
        self.drop_path = maybe_drop_path(ctx.drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), mask=mask)))
        p = self.num_prefix
        patches = self.norm3(x[:, p:])
        if mask is not None and mask.ndim == 2:
            patches = patches * mask[:, p:, None].to(patches.dtype)
        local = self.local(patches, self.grid)
        if p:  # prefix tokens get a zero LPI update; skip the pad's copy when there are none
            local = F.pad(local, (0, 0, p, 0))
        x = x + self.drop_path(self.ls3(local))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


# ---------------------------------------------------------------------------------------------
# Convolutional patch stem and Fourier positions
# ---------------------------------------------------------------------------------------------
class XcitStemConfig(ComponentConfig):
    """Patches from log2(patch_size) stride-2 3x3 conv + BatchNorm layers, GELU between them."""

    type: Literal["xcit-stem"] = "xcit-stem"
    patch_size: PositiveInt = 16

    def check(self, image_size: Any = None, dim: int | None = None, **_: Any) -> None:
        layers = math.log2(self.patch_size) if self.patch_size > 0 else 0.5
        if not layers.is_integer() or layers < 1:
            raise SpecValueError("patch_size", "must be a power of two >= 2 (e.g. 8, 16)")
        if dim is not None and dim % 2 ** (int(layers) - 1):
            raise SpecValueError(
                "patch_size",
                f"dim={dim} must be divisible by {2 ** (int(layers) - 1)} for the stem",
            )
        if image_size is not None:
            check_divisible(image_size, self.patch_size)


class XcitStem(Patchifier):
    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        layers = int(math.log2(patch_size))
        widths = [in_chans] + [dim // 2 ** (layers - 1 - i) for i in range(layers)]
        self.proj = nn.Sequential(
            *(
                ConvNormAct(
                    widths[i],
                    widths[i + 1],
                    3,
                    2,
                    activation="gelu" if i < layers - 1 else "none",
                )
                for i in range(layers)
            )
        )

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // self.patch_size for s in image_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 4:
            raise ValueError(f"xcit-stem expects images (B, C, H, W), got {tuple(x.shape)}")
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


def build_xcit_stem(config: XcitStemConfig, ctx: BuildContext) -> XcitStem:
    """XCiT convolutional patch stem."""
    return XcitStem(ctx.in_chans, ctx.dim, config.patch_size)


def fourier_features(
    grid: tuple[int, ...], hidden_dim: int, temperature: float, device: Any = None
) -> torch.Tensor:
    """XCiT's ``PositionalEncodingFourier`` features, (1, h*w, 2 * hidden_dim), before projection.

    The DETR-style table of the official code: coordinates 1..h (and 1..w) scaled to (0, 2*pi],
    ``hidden_dim`` frequencies ``temperature ** (2 * (i // 2) / hidden_dim)`` per axis with sin on
    even and cos on odd channels (interleaved), the y block before the x block.
    """
    h, w = grid
    scale, eps = 2 * math.pi, 1e-6
    ys = torch.arange(1, h + 1, device=device, dtype=torch.float32)
    xs = torch.arange(1, w + 1, device=device, dtype=torch.float32)
    ys, xs = ys / (h + eps) * scale, xs / (w + eps) * scale
    steps = torch.arange(hidden_dim, device=device, dtype=torch.float32)
    periods = temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / hidden_dim)
    is_even = (torch.arange(hidden_dim, device=device) % 2 == 0)[None, :]

    def axis_table(coords: torch.Tensor) -> torch.Tensor:
        angles = coords[:, None] / periods[None, :]
        return torch.where(is_even, angles.sin(), angles.cos())  # (n, hidden_dim)

    y_table = axis_table(ys)[:, None, :].expand(h, w, hidden_dim)
    x_table = axis_table(xs)[None, :, :].expand(h, w, hidden_dim)
    return torch.cat([y_table, x_table], dim=-1).reshape(1, h * w, 2 * hidden_dim)


class FourierPosConfig(ComponentConfig):
    """XCiT's Fourier positions: a fixed DETR-style sin-cos table of each patch's (y, x),
    projected to the width by a learned linear map (the official code's 1x1 conv)."""

    type: Literal["fourier"] = "fourier"
    hidden_dim: PositiveInt = 32
    temperature: PositiveFloat = 10000.0

    def check(self, spatial_dims: int = 2, **_: Any) -> None:
        if spatial_dims != 2:
            raise SpecValueError("type", "fourier positions need a 2D token grid")
        if self.hidden_dim < 2 or self.hidden_dim % 2:
            raise SpecValueError("hidden_dim", f"must be even and >= 2, got {self.hidden_dim}")


class FourierPositions(nn.Module):
    """tokens + proj(fourier_features(grid)); the table is recomputed for any grid (no resize)."""

    def __init__(self, dim: int, hidden_dim: int, temperature: float) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.temperature = temperature
        self.proj = nn.Linear(2 * hidden_dim, dim)

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, ...], num_prefix_tokens: int
    ) -> torch.Tensor:
        table = fourier_features(tuple(grid), self.hidden_dim, self.temperature, tokens.device)
        pos = self.proj(table.to(tokens.dtype))
        if not num_prefix_tokens:  # the usual case (late class token): no concatenation copy
            return tokens + pos
        return torch.cat(
            [tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:] + pos], dim=1
        )


def build_fourier(config: FourierPosConfig, ctx: BuildContext) -> FourierPositions:
    """XCiT's projected Fourier positions."""
    return FourierPositions(ctx.dim, config.hidden_dim, config.temperature)


# ---------------------------------------------------------------------------------------------
# XCiT's class-attention block
# ---------------------------------------------------------------------------------------------
class XcitClassAttentionConfig(ClassAttentionBlockConfig):
    """The released XCiT class-attention layer (official code / timm ``ClassAttentionBlock``).

    Unlike CaiT's block (``class-attention``) the patch tokens change too: they receive their own
    first-norm output as the attention branch, ``tokens_norm: true`` (every released model but
    the nano ones) applies the second norm to the whole stream, not only the class token, and the
    MLP residual is added to the *normalised* class token.
    """

    type: Literal["xcit-class-attention"] = "xcit-class-attention"  # type: ignore[assignment]
    #: The released layers all have LayerScale (initialised to 1.0 or 1e-5).
    layer_scale: PositiveFloat | None = 1.0
    tokens_norm: bool = True


class XcitClassAttentionBlock(ClassAttentionBlock):
    """XCiT's class-attention block (patch tokens updated, ``tokens_norm``).

    CaiT's class-attention parts (norms, class attention, MLP, LayerScale) in XCiT's order.

    The reference sums the normalised stream with ``[mlp branch, patches]``, so the patch tokens
    leave the layer doubled; that is kept, because the next class-attention layer reads them.
    """

    def __init__(self, config: XcitClassAttentionConfig, ctx: BuildContext) -> None:
        super().__init__(ctx, config.attention, config.layer_scale, config.norm_eps)
        self.tokens_norm = config.tokens_norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        normed = self.norm1(x)
        update = torch.cat([self.attn(normed, mask=mask), normed[:, 1:]], dim=1)
        x = x + self.drop_path(self.ls1(update))
        if self.tokens_norm:
            x = self.norm2(x)
        else:
            x = torch.cat([self.norm2(x[:, :1]), x[:, 1:]], dim=1)
        cls = self.ls2(self.mlp(x[:, :1]))
        return x + self.drop_path(torch.cat([cls, x[:, 1:]], dim=1))


# ---------------------------------------------------------------------------------------------
# The XCiT architecture
# ---------------------------------------------------------------------------------------------
class XcitConfig(LateClassTokenConfig):
    """XCiT: the CaiT structure (blocks on patch tokens, then ``cls_depth`` class-attention
    blocks with a late class token) with XCA attention, XCiT blocks, the conv stem and Fourier
    positions as defaults."""

    #: Memory-token adapters mask attention with (N, N) matrices, which XCA does not take.
    full_attention_masks: ClassVar[bool] = False

    type: Literal["xcit"] = "xcit"  # type: ignore[assignment]
    dim: PositiveInt = 192
    depth: PositiveInt = 12
    num_heads: PositiveInt = 4
    patch: ComponentSpec("patchifier") = component_default(type="xcit-stem", patch_size=16)
    posenc: ComponentSpec("posenc") = component_default(type="fourier")
    attention: ComponentSpec("attention") = component_default(type="xca")
    block: ComponentSpec("block") = component_default(type="xcit", layer_scale=1.0)
    class_block: ComponentSpec("block") = component_default(
        type="xcit-class-attention", layer_scale=1.0, tokens_norm=True
    )

    @model_validator(mode="after")
    def _xcit_rules(self) -> XcitConfig:
        if self.patch_dropout and isinstance(self.block, XcitBlockConfig):
            raise SpecValueError(
                "patch_dropout",
                "the xcit block's local patch interaction needs every patch of the grid; "
                "allowed: 0.0",
            )
        return self

    def class_drop_path_rates(self) -> list[float]:
        """XCiT's class-attention layers run without stochastic depth."""
        return [0.0] * self.cls_depth


class XCiT(LateClassTokenTransformer):
    """XCiT (cross-covariance image transformer).

    The late-class-token (CaiT) model with XCiT's parts.

    Not a "tokens" model for objectives (its registration does not declare it): the local
    patch interaction needs the whole patch grid, so token dropping / masking objectives do not
    apply.
    """

    def no_weight_decay(self) -> set[str]:
        temperatures = {n for n, _ in self.named_parameters() if n.endswith("temperature")}
        return super().no_weight_decay() | temperatures


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------
@hookimpl
def register_attention(register: Any) -> None:
    register(
        "xca", build_xca, XcaConfig, tags={"mask", "linear-complexity"}, example={"config": {}}
    )


@hookimpl
def register_blocks(register: Any) -> None:
    register(
        "xcit",
        XcitBlock,
        XcitBlockConfig,
        tags={"mask"},
        needs={"grid-2d", "fixed-grid"},
        example={"config": {}},
    )
    register(
        "xcit-class-attention",
        XcitClassAttentionBlock,
        XcitClassAttentionConfig,
        tags={"mask"},
        example={"config": {}},
    )


@hookimpl
def register_patchifiers(register: Any) -> None:
    register(
        "xcit-stem",
        build_xcit_stem,
        XcitStemConfig,
        tags={"image"},
        example={"config": {"patch_size": 8}},
    )


@hookimpl
def register_positional_encodings(register: Any) -> None:
    register("fourier", build_fourier, FourierPosConfig, example={"config": {}})


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "xcit",
        XCiT,
        XcitConfig,
        tags={"image"},
        example=TINY_VIT | {"cls_depth": 1, "patch": {"type": "xcit-stem", "patch_size": 8}},
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "xcit")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
