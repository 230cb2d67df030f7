"""Built-in plugin: CrossFormer (Wang et al., 2021, arXiv:2108.00154) and its ImageNet presets.

CrossFormer's three mechanisms are registered on their own so other models can use them:

* ``cross-scale`` patchifier -- the cross-scale embedding layer (CEL): several convolutions with
  different kernels and one stride, their outputs concatenated (large kernels get fewer channels).
  The same layer (norm first, stride 2) merges patches between stages.
* ``lsda`` attention -- long-short distance attention: short-distance (SDA) groups adjacent
  ``group_size x group_size`` tokens, long-distance (LDA) groups tokens sampled every
  ``interval`` positions. CrossFormer alternates SDA and LDA blocks.
* the dynamic position bias (DPB) lives in :mod:`vitzoo.components.relative_position`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig
from vitzoo.components.context import BuildContext
from vitzoo.components.hierarchical import (
    ChannelLayerNorm,
    HierarchicalConfig,
    HierarchicalModel,
    build_token_stages,
    check_image_divisible,
    check_positive,
    tokens_to_map,
)
from vitzoo.components.layers import to_pair
from vitzoo.components.patchify import Patchifier
from vitzoo.components.relative_position import DynamicPositionBias
from vitzoo.components.windows import (
    GridBoundAttentionChecks,
    WindowAttention,
    WindowAttentionConfig,
)
from vitzoo.config import ComponentConfig, PositiveFloat, PositiveInt, check_child
from vitzoo.registration_examples import grid_only_example


# -- cross-scale embedding ---------------------------------------------------------------------
def cross_scale_dims(dim: int, num_kernels: int) -> list[int]:
    """Channels per kernel: half for the smallest, a quarter for the next, ...; last two equal."""
    if num_kernels == 1:
        return [dim]
    return [dim // 2 ** (i + 1) for i in range(num_kernels - 1)] + [dim // 2 ** (num_kernels - 1)]


def check_cross_scale(field: str, kernel_sizes: tuple[int, ...], stride: int, dim: int) -> None:
    """Every kernel must cover its stride symmetrically, and each kernel must get >= 1 channel."""
    for k in kernel_sizes:
        if k < stride or (k - stride) % 2:
            raise SpecValueError(
                field,
                f"kernel {k} cannot be centred on stride {stride}; allowed: kernels >= {stride} "
                f"with an even difference to it, e.g. {[stride * 2**i for i in range(4)]}",
            )
    if min(cross_scale_dims(dim, len(kernel_sizes))) < 1:
        raise SpecValueError(
            field, f"{len(kernel_sizes)} kernels split {dim} channels into empty groups"
        )


class CrossScaleConv(nn.Module):
    """Convolutions of several kernel sizes on the same stride, concatenated on channels."""

    def __init__(self, in_chans: int, dim: int, kernel_sizes: tuple[int, ...], stride: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_chans, d, kernel_size=k, stride=stride, padding=(k - stride) // 2)
            for k, d in zip(kernel_sizes, cross_scale_dims(dim, len(kernel_sizes)), strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(x) for conv in self.convs], dim=1)


class CrossScaleEmbedConfig(ComponentConfig):
    """CrossFormer's cross-scale embedding layer (multi-kernel patch embedding + LayerNorm)."""

    type: Literal["cross-scale"] = "cross-scale"
    kernel_sizes: tuple[PositiveInt, ...] = (4, 8, 16, 32)
    stride: PositiveInt = 4

    def check(self, image_size: Any = None, dim: int | None = None, **_: Any) -> None:
        if dim is not None:
            check_cross_scale("kernel_sizes", self.kernel_sizes, self.stride, dim)
        if image_size is not None:
            for size in to_pair(image_size):
                if size % self.stride:
                    raise SpecValueError(
                        "stride", f"stride {self.stride} does not divide image size {size}"
                    )


class CrossScaleEmbed(Patchifier):
    """Image -> tokens with the cross-scale embedding layer, then LayerNorm."""

    def __init__(self, in_chans: int, dim: int, config: CrossScaleEmbedConfig) -> None:
        super().__init__()
        self.stride = config.stride
        self.proj = CrossScaleConv(in_chans, dim, config.kernel_sizes, config.stride)
        self.norm = nn.LayerNorm(dim)

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // self.stride for s in image_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), tuple(x.shape[2:])


def build_cross_scale_embed(config: CrossScaleEmbedConfig, ctx: BuildContext) -> CrossScaleEmbed:
    """Cross-scale embedding layer (CrossFormer)."""
    return CrossScaleEmbed(ctx.in_chans, ctx.dim, config)


class CrossScaleMerge(nn.Module):
    """Patch merging between stages: LayerNorm, then a stride-2 cross-scale convolution."""

    def __init__(self, in_dim: int, out_dim: int, kernel_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(in_dim)
        self.proj = CrossScaleConv(in_dim, out_dim, kernel_sizes, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


# -- long-short distance attention -------------------------------------------------------------
class LsdaConfig(GridBoundAttentionChecks, MhsaConfig):
    """Long-short distance attention with dynamic position bias (CrossFormer).

    ``short`` (SDA): attention inside adjacent ``group_size`` x ``group_size`` windows (the whole
    map when it is smaller); ``long`` (LDA): attention among tokens sampled every ``interval``
    positions, i.e. groups of (H/interval) x (W/interval) tokens spread over the whole map.
    """

    type: Literal["lsda"] = "lsda"  # type: ignore[assignment]
    mode: Literal["short", "long"] = "short"
    group_size: PositiveInt = 7
    interval: PositiveInt = 8
    position_bias: bool = True
    #: DPB MLP width = stage width // this (CrossFormer: dim // 4 passed on, // 4 again).
    position_bias_reduction: PositiveInt = 16

    def check_fields(self) -> None:
        check_positive(group_size=self.group_size, interval=self.interval)

    def check_grid_fit(self, grid: Sequence[int]) -> None:
        self.check_grid(grid, "group_size" if self.mode == "short" else "interval")

    def group_for(self, grid: Sequence[int]) -> tuple[int, int]:
        """The (h, w) token group one attention runs over on a stage ``grid``."""
        if self.mode == "short":
            return (min(self.group_size, grid[0]), min(self.group_size, grid[1]))
        return (grid[0] // min(self.interval, grid[0]), grid[1] // min(self.interval, grid[1]))

    def check_grid(self, grid: Sequence[int], field: str) -> None:
        """The groups must tile ``grid`` exactly (SDA: window divides it; LDA: interval does)."""
        if self.mode == "short":
            step = self.group_for(grid)
        else:
            step = (min(self.interval, grid[0]), min(self.interval, grid[1]))
        if grid[0] % step[0] or grid[1] % step[1]:
            what = (
                f"short-distance groups of {self.group_size}"
                if self.mode == "short"
                else f"long-distance interval {self.interval}"
            )
            raise SpecValueError(
                field,
                f"{what} does not tile the {grid[0]}x{grid[1]} token grid; allowed: grid sides "
                f"that are multiples of {step[0]} (or smaller than it)",
            )


class LongShortDistanceAttention(WindowAttention):
    """Window attention in SDA windows or LDA dilated groups, biased by a DPB MLP."""

    follows_grid = False  # the groups are fitted to the build grid

    def __init__(self, dim: int, num_heads: int, grid: Sequence[int], config: LsdaConfig):
        if len(grid) != 2:
            raise ValueError(f"lsda needs the 2D token grid of its stage, got {grid}")
        config.check_grid(grid, "group_size" if config.mode == "short" else "interval")
        group = config.group_for(grid)
        window_config = WindowAttentionConfig(
            **config.model_dump(include=set(MhsaConfig.model_fields) - {"type"}),
            window_size=group,
            mode="block" if config.mode == "short" else "grid",
            relative_bias=False,
        )
        super().__init__(dim, num_heads, window_config, grid)
        if config.position_bias:
            hidden = max(dim // config.position_bias_reduction, 1)
            self.relative_position = DynamicPositionBias(hidden, num_heads, group)


def build_lsda(config: LsdaConfig, ctx: BuildContext) -> LongShortDistanceAttention:
    """Long-short distance attention (CrossFormer)."""
    return LongShortDistanceAttention(ctx.dim, ctx.num_heads, tuple(ctx.grid), config)


# -- the architecture --------------------------------------------------------------------------
class CrossFormerConfig(HierarchicalConfig):
    """CrossFormer: cross-scale embeddings and alternating SDA / LDA blocks with DPB.

    Per-stage lists (one entry per stage): ``dims``, ``depths``, ``num_heads``, ``group_sizes``
    (SDA window), ``intervals`` (LDA step); ``merge_kernel_sizes`` has one kernel tuple per
    downsampling (stages - 1).
    """

    type: Literal["crossformer"] = "crossformer"
    dims: tuple[PositiveInt, ...] = (64, 128, 256, 512)
    depths: tuple[PositiveInt, ...] = (1, 1, 8, 6)
    num_heads: tuple[PositiveInt, ...] = (2, 4, 8, 16)
    group_sizes: tuple[PositiveInt, ...] = (7, 7, 7, 7)
    intervals: tuple[PositiveInt, ...] = (8, 4, 2, 1)
    patch: ComponentSpec("patchifier") = component_default(
        type="cross-scale", kernel_sizes=(4, 8, 16, 32), stride=4
    )
    merge_kernel_sizes: tuple[tuple[PositiveInt, ...], ...] = ((2, 4), (2, 4), (2, 4))
    attention: ComponentSpec("attention") = component_default(type="lsda")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm", norm_eps=1e-5)
    norm_eps: PositiveFloat = 1e-5

    @property
    def num_stages(self) -> int:
        return len(self.dims)

    def stem_stride(self) -> int:
        """The patchifier's stride (``stride`` of cross-scale, ``patch_size`` of linear)."""
        stride = getattr(self.patch, "stride", None) or getattr(self.patch, "patch_size", None)
        if stride is None:
            raise SpecValueError(
                "patch", "needs a patchifier with a stride or patch_size (e.g. cross-scale)"
            )
        pair = to_pair(stride)
        if pair[0] != pair[1]:
            raise SpecValueError("patch", f"needs a square stride, got {stride}")
        return pair[0]

    def stage_grids(self) -> list[tuple[int, int]]:
        stride = self.stem_stride()
        h, w = (s // stride for s in self.image_hw)
        return [(h // 2**i, w // 2**i) for i in range(self.num_stages)]

    @model_validator(mode="after")
    def _rules(self) -> CrossFormerConfig:
        self.check_stages(lists=dict(group_sizes=self.group_sizes, intervals=self.intervals))
        n = self.num_stages
        if len(self.merge_kernel_sizes) != n - 1:
            raise SpecValueError(
                "merge_kernel_sizes",
                f"has {len(self.merge_kernel_sizes)} entries but dims defines {n} stages, which "
                f"need {n - 1} (one kernel tuple per downsampling)",
            )
        for i, kernels in enumerate(self.merge_kernel_sizes):
            check_cross_scale(f"merge_kernel_sizes.{i}", kernels, 2, self.dims[i + 1])
        check_child(self.patch, "patch", image_size=self.image_hw, dim=self.dims[0])
        check_child(self.attention, "attention", class_token=False)
        stride = self.stem_stride()
        check_image_divisible(
            self.image_size, stride * 2 ** (n - 1), f"stem stride {stride} and {n - 1} halvings"
        )
        if isinstance(self.attention, LsdaConfig):
            for i, grid in enumerate(self.stage_grids()):
                for mode, field in (("short", "group_sizes"), ("long", "intervals")):
                    probe = self.stage_attention(i, mode)
                    try:
                        probe.check_grid(grid, f"{field}.{i}")
                    except SpecValueError as exc:
                        raise SpecValueError(
                            "image_size", f"stage {i + 1} ({field}.{i}): {exc.message}"
                        ) from None
        return self

    def stage_attention(self, stage: int, mode: str) -> Any:
        """The attention spec of stage ``stage`` for an SDA (``short``) or LDA (``long``) block."""
        if not isinstance(self.attention, LsdaConfig):
            return self.attention
        return self.attention.model_copy(
            update=dict(
                mode=mode, group_size=self.group_sizes[stage], interval=self.intervals[stage]
            )
        )

    def block_attention(self, stage: int, index: int) -> Any:
        """Blocks alternate SDA (even ``index``) and LDA (odd ``index``)."""
        return self.stage_attention(stage, "short" if index % 2 == 0 else "long")


class CrossFormer(HierarchicalModel):
    """CrossFormer (hierarchical, cross-scale attention).

    Cross-scale embedding -> stages of [SDA, LDA, ...] blocks, cross-scale merges between.
    """

    def __init__(self, config: CrossFormerConfig, ctx: BuildContext) -> None:
        super().__init__()
        base = ctx.replace(in_chans=config.in_chans)
        self.patch = base.build("patchifier", config.patch, dim=config.dims[0])
        merges = [
            CrossScaleMerge(config.dims[i - 1], config.dims[i], config.merge_kernel_sizes[i - 1])
            for i in range(1, config.num_stages)
        ]
        self.stages = build_token_stages(
            base,
            config,
            [nn.Identity(), *merges],
            config.stage_grids(),
            attention=config.block_attention,
        )
        self.init_tail(config, base, config.dims[-1], map_norm_eps=config.norm_eps)

    def run_stem(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid = self.patch(x)
        return tokens_to_map(tokens, grid)


TINY = {
    "image_size": 32,
    "num_classes": 10,
    "dims": (32, 64),
    "depths": (2, 2),
    "num_heads": (2, 2),
    "group_sizes": (2, 2),
    "intervals": (2, 2),
    "patch": {"type": "cross-scale", "kernel_sizes": (4, 8), "stride": 4},
    "merge_kernel_sizes": ((2, 4),),
}


@hookimpl
def register_patchifiers(register: Any) -> None:
    register(
        "cross-scale",
        build_cross_scale_embed,
        CrossScaleEmbedConfig,
        tags={"image"},
        example={"config": {"kernel_sizes": (8, 16), "stride": 8}},
    )


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "lsda",
        build_lsda,
        LsdaConfig,
        tags={"sdpa"},
        needs={"grid-2d", "fixed-grid", "no-prefix-tokens"},
        example=grid_only_example(mode="long", group_size=2, interval=2),
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "crossformer",
        CrossFormer,
        CrossFormerConfig,
        tags={"image", "feature-maps"},
        example=TINY,
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "crossformer")
