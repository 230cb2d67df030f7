"""Built-in plugin: ScalableViT (Yang et al., 2022, arXiv:2203.10790) and its ImageNet preset.

ScalableViT alternates two registered attentions, usable in any model:

* ``ssa`` -- scalable self-attention: keys and values come from a spatially reduced map (a
  ``reduction`` x ``reduction`` depthwise conv + 1x1 conv) whose width is scaled by
  ``channel_ratio``; queries and keys live in that scaled width, values keep the model width.
* ``iwsa`` -- interactive window self-attention: attention inside windows plus a local
  interactive module (LIM, a depthwise 3x3 conv over the value map) added before the output
  projection, so neighbouring windows exchange information.

Stages start with an overlapping convolutional embedding (kernel 7 / stride 4, then 3 / 2, each
followed by LayerNorm) and apply a positional encoding generator (PEG) after their first block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import AttentionBase, MhsaConfig
from vitzoo.components.context import BuildContext
from vitzoo.components.downsample import ConvEmbedStagesConfig, build_conv_embed_stages
from vitzoo.components.hierarchical import (
    HierarchicalModel,
    check_positive,
)
from vitzoo.components.windows import (
    GridBoundAttentionChecks,
    WindowAttention,
    WindowAttentionConfig,
    require_tiling,
    window_reverse,
)
from vitzoo.config import ComponentConfig, PositiveFloat, PositiveInt, Rate
from vitzoo.registration_examples import grid_only_example


# -- scalable self-attention -------------------------------------------------------------------
class SsaConfig(GridBoundAttentionChecks, ComponentConfig):
    """Scalable self-attention: K, V from a ``reduction``-downsampled, ``channel_ratio``-wide map."""

    type: Literal["ssa"] = "ssa"
    reduction: PositiveInt = 1
    channel_ratio: PositiveFloat = 1.25
    qkv_bias: bool = True
    attn_drop: Rate = 0.0
    proj_drop: Rate = 0.0

    def check(self, dim: int | None = None, num_heads: int | None = None, **context: Any) -> None:
        super().check(**context)
        if dim is not None and num_heads is not None:
            self.check_width(dim, num_heads, "channel_ratio")

    def check_fields(self) -> None:
        check_positive(reduction=self.reduction)
        if self.channel_ratio <= 0:
            raise SpecValueError("channel_ratio", f"must be positive, got {self.channel_ratio}")

    def check_grid_fit(self, grid: Sequence[int]) -> None:
        step = (self.reduction, self.reduction)
        require_tiling(grid, step, f"ssa reduction {self.reduction}", field="reduction")

    def scaled_dim(self, dim: int) -> int:
        return int(dim * self.channel_ratio)

    def check_width(self, dim: int, num_heads: int, field: str) -> None:
        scaled = self.scaled_dim(dim)
        if scaled % num_heads:
            raise SpecValueError(
                field,
                f"the scaled width int({dim} * {self.channel_ratio}) = {scaled} is not divisible "
                f"by {num_heads} heads; choose a channel_ratio giving a multiple of {num_heads}",
            )


class ScalableSelfAttention(AttentionBase):
    """softmax(q k^T / sqrt(d * r)) v with k, v from the reduced map (ScalableViT's SSA)."""

    def __init__(self, dim: int, num_heads: int, grid: Sequence[int], config: SsaConfig) -> None:
        super().__init__(config.attn_drop)
        if len(grid) != 2 or grid[0] % config.reduction or grid[1] % config.reduction:
            raise ValueError(f"ssa reduction {config.reduction} does not tile the grid {grid}")
        self.num_heads = num_heads
        self.grid = tuple(grid)
        self.reduction = config.reduction
        scaled = config.scaled_dim(dim)
        self.scale = (dim // num_heads * config.channel_ratio) ** -0.5
        if config.reduction > 1:
            self.q = nn.Linear(dim, scaled, bias=config.qkv_bias)
            self.reduce = nn.Sequential(
                nn.Conv2d(dim, dim, config.reduction, stride=config.reduction, groups=dim),
                nn.Conv2d(dim, scaled, 1),
            )
            self.norm_act = nn.Sequential(nn.LayerNorm(scaled), nn.GELU())
            self.k = nn.Linear(scaled, scaled, bias=config.qkv_bias)
            self.v = nn.Linear(scaled, dim, bias=config.qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=config.qkv_bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(config.proj_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("ssa does not take token masks (its keys are pooled regions)")
        b, n, c = x.shape
        q = self._heads(self.q(x))
        if self.reduction > 1:
            fmap = x.transpose(1, 2).reshape(b, c, *self.grid)
            reduced = self.norm_act(self.reduce(fmap).flatten(2).transpose(1, 2))
            k, v = self._heads(self.k(reduced)), self._heads(self.v(reduced))
        else:
            k, v = self.kv(x).chunk(2, dim=-1)
            k, v = self._heads(k), self._heads(v)
        out = self.attend(q, k, v, scale=self.scale)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


def build_ssa(config: SsaConfig, ctx: BuildContext) -> ScalableSelfAttention:
    """Scalable self-attention (ScalableViT)."""
    return ScalableSelfAttention(ctx.dim, ctx.num_heads, ctx.grid, config)


# -- interactive window self-attention ---------------------------------------------------------
class IwsaConfig(GridBoundAttentionChecks, MhsaConfig):
    """Window attention plus a local interactive module (depthwise 3x3 conv over the values)."""

    type: Literal["iwsa"] = "iwsa"  # type: ignore[assignment]
    window_size: PositiveInt = 7

    def check_fields(self) -> None:
        check_positive(window_size=self.window_size)
        if self.head_dim is not None:
            raise SpecValueError(
                "head_dim", "iwsa adds LIM(values) at the model width, so heads split it evenly"
            )

    def check_grid_fit(self, grid: Sequence[int]) -> None:
        window = (min(self.window_size, grid[0]), min(self.window_size, grid[1]))
        require_tiling(grid, window, f"iwsa windows of {self.window_size}")


class InteractiveWindowAttention(WindowAttention):
    """Attention within windows; LIM(values) is added to the merged output before projection."""

    follows_grid = False  # the window is fitted to the build grid

    def __init__(self, dim: int, num_heads: int, grid: Sequence[int], config: IwsaConfig):
        window = (min(config.window_size, grid[0]), min(config.window_size, grid[1]))
        if grid[0] % window[0] or grid[1] % window[1]:
            raise ValueError(f"iwsa window {config.window_size} does not tile the grid {grid}")
        window_config = WindowAttentionConfig(
            **config.model_dump(include=set(MhsaConfig.model_fields) - {"type"}),
            window_size=window,
            relative_bias=False,
        )
        super().__init__(dim, num_heads, window_config, grid)
        self.lim = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("iwsa does not take token masks")
        b, n, c = x.shape
        h, w = self.grid
        q, k, v = self.split_heads(self._partition(x.view(b, h, w, c)))
        out = self.attend(q, k, v)

        def merge(t: torch.Tensor) -> torch.Tensor:  # (B*nW, heads, N, d) -> (B, H, W, C)
            return window_reverse(t.transpose(1, 2).flatten(2), self.window, (h, w))

        lim = self.lim(merge(v).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = (merge(out) + lim).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


def build_iwsa(config: IwsaConfig, ctx: BuildContext) -> InteractiveWindowAttention:
    """Interactive window self-attention (ScalableViT)."""
    return InteractiveWindowAttention(ctx.dim, ctx.num_heads, ctx.grid, config)


# -- the classifier head ----------------------------------------------------------------------
class MlpHeadConfig(ComponentConfig):
    """Linear -> LayerNorm -> GELU -> Linear classifier (the ScalableViT release's 4096-wide head)."""

    type: Literal["mlp"] = "mlp"
    hidden_dim: PositiveInt = 4096
    norm_eps: PositiveFloat = 1e-6

    def check(self, **_: Any) -> None:
        check_positive(hidden_dim=self.hidden_dim)


class MlpHead(nn.Module):
    def __init__(self, num_features: int, num_classes: int, config: MlpHeadConfig) -> None:
        super().__init__()
        # num_classes == 0 asks for features: the whole head becomes the identity.
        self.hidden: nn.Module = nn.Identity()
        self.fc = nn.Identity()
        if num_classes > 0:
            self.hidden = nn.Sequential(
                nn.Linear(num_features, config.hidden_dim),
                nn.LayerNorm(config.hidden_dim, eps=config.norm_eps),
                nn.GELU(),
            )
            self.fc = nn.Linear(config.hidden_dim, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(pooled))


def build_mlp_head(config: MlpHeadConfig, ctx: BuildContext) -> MlpHead:
    """Two-layer MLP classifier head."""
    return MlpHead(ctx.num_features, ctx.num_classes, config)


# -- the architecture --------------------------------------------------------------------------
class ScalableVitConfig(ConvEmbedStagesConfig):
    """ScalableViT: conv embeddings, blocks alternating IWSA (even) and SSA (odd), PEG.

    Per-stage lists: ``dims``, ``depths``, ``num_heads``, ``window_sizes`` (IWSA),
    ``reductions`` and ``channel_ratios`` (SSA). The default head is the released model's
    ``mlp`` head (Linear 4096, LayerNorm, GELU, Linear); ``head: {type: linear}`` gives the plain
    classifier.
    """

    type: Literal["scalable-vit"] = "scalable-vit"
    head: ComponentSpec("head") = component_default(type="mlp", hidden_dim=4096)
    dims: tuple[PositiveInt, ...] = (64, 128, 256, 512)
    depths: tuple[PositiveInt, ...] = (2, 2, 20, 2)
    num_heads: tuple[PositiveInt, ...] = (2, 4, 8, 16)
    window_sizes: tuple[PositiveInt, ...] = (7, 7, 7, 7)
    reductions: tuple[PositiveInt, ...] = (8, 4, 2, 1)
    channel_ratios: tuple[PositiveFloat, ...] = (1.25, 1.25, 1.25, 1.0)
    local_attention: ComponentSpec("attention") = component_default(type="iwsa")
    global_attention: ComponentSpec("attention") = component_default(type="ssa")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm")
    norm_eps: PositiveFloat = 1e-6

    def stage_attention(self, stage: int, index: int) -> Any:
        """IWSA on even blocks, SSA on odd blocks, with this stage's window / reduction."""
        if index % 2 == 0:
            spec = self.local_attention
            if isinstance(spec, IwsaConfig):
                return spec.model_copy(update={"window_size": self.window_sizes[stage]})
            return spec
        spec = self.global_attention
        if isinstance(spec, SsaConfig):
            return spec.model_copy(
                update={
                    "reduction": self.reductions[stage],
                    "channel_ratio": self.channel_ratios[stage],
                }
            )
        return spec

    @model_validator(mode="after")
    def _rules(self) -> ScalableVitConfig:
        self.check_stages(
            lists=dict(
                window_sizes=self.window_sizes,
                reductions=self.reductions,
                channel_ratios=self.channel_ratios,
            ),
            positive=dict(window_sizes=self.window_sizes, reductions=self.reductions),
        )
        self.check_children(
            "local_attention", "global_attention", "mlp", "block", class_token=False
        )
        for i, (grid, dim, heads) in enumerate(
            zip(self.stage_grids(), self.dims, self.num_heads, strict=True)
        ):
            window = self.window_sizes[i]
            if isinstance(self.local_attention, IwsaConfig) and any(
                g % min(window, g) for g in grid
            ):
                raise SpecValueError(
                    "image_size",
                    f"stage {i + 1} has a {grid[0]}x{grid[1]} token grid that windows of "
                    f"{window} (window_sizes.{i}) do not tile; allowed: image sizes whose stage "
                    f"grids are multiples of the window, e.g. {self._example_size()}",
                )
            if isinstance(self.global_attention, SsaConfig):
                reduction = self.reductions[i]
                if any(g % reduction for g in grid):
                    raise SpecValueError(
                        "image_size",
                        f"stage {i + 1} has a {grid[0]}x{grid[1]} token grid that the SSA "
                        f"reduction {reduction} (reductions.{i}) does not divide",
                    )
                self.stage_attention(i, 1).check_width(dim, heads, f"channel_ratios.{i}")
        return self

    def _example_size(self) -> int:
        stride = self.stem_stride * 2 ** (len(self.dims) - 1)
        return stride * max(self.window_sizes)


class ScalableVit(HierarchicalModel):
    """ScalableViT (scalable self-attention + interactive window attention).

    Stages of [conv embedding, IWSA/SSA blocks with a PEG after the first] -> norm -> head.
    """

    def __init__(self, config: ScalableVitConfig, ctx: BuildContext) -> None:
        super().__init__()
        base = ctx.replace(in_chans=config.in_chans)
        self.stem = nn.Identity()
        self.stages = build_conv_embed_stages(
            base, config, attention=config.stage_attention, embed_norm_eps=config.norm_eps
        )
        self.init_tail(config, base, config.dims[-1], map_norm_eps=config.norm_eps)


TINY = {
    "image_size": 32,
    "num_classes": 10,
    "dims": (32, 64),
    "depths": (2, 2),
    "num_heads": (2, 2),
    "window_sizes": (4, 2),
    "reductions": (2, 1),
    "channel_ratios": (1.25, 1.0),
    "head": {"type": "mlp", "hidden_dim": 32},
}


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "ssa",
        build_ssa,
        SsaConfig,
        tags={"sdpa"},
        needs={"grid-2d", "fixed-grid", "no-prefix-tokens"},
        example=grid_only_example(reduction=2, channel_ratio=1.0),
    )
    register(
        "iwsa",
        build_iwsa,
        IwsaConfig,
        tags={"sdpa"},
        needs={"grid-2d", "fixed-grid", "no-prefix-tokens"},
        example=grid_only_example(window_size=2),
    )


@hookimpl
def register_heads(register: Any) -> None:
    register(
        "mlp",
        build_mlp_head,
        MlpHeadConfig,
        needs={"pooled-vector"},
        example={"config": {"hidden_dim": 16}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "scalable-vit",
        ScalableVit,
        ScalableVitConfig,
        tags={"image", "feature-maps"},
        example=TINY,
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "scalablevit")
