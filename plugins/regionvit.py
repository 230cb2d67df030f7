"""Built-in plugin: RegionViT (Chen et al., 2021, arXiv:2106.02689) and its ImageNet presets.

RegionViT keeps two token sets: **local** tokens (a 4x4-pixel patch each) and **regional**
tokens (one per ``window x window`` group of local tokens, i.e. a 28x28-pixel patch). Each
regional-to-local (R2L) block

1. lets all regional tokens of an image attend to each other (regional self-attention), then
2. lets each regional token and the local tokens of its window attend jointly (local
   self-attention, with a learned relative position bias among the local tokens),
3. then applies the MLP to every token.

Both attentions share one set of weights, as in the paper. Between stages a LayerNorm + GELU +
stride-2 depthwise-style conv (shared by the two token sets) halves the grids and doubles the
width. Classification averages the normalised regional tokens; the per-stage feature maps
(``forward_intermediates``) are the local-token maps, ``forward_features`` returns the final
normalised regional-token map the head consumes.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.hierarchical import (
    ChannelLayerNorm,
    HierarchicalConfig,
    HierarchicalModel,
    check_image_divisible,
    drop_path_schedule,
    map_to_tokens,
    tokens_to_map,
)
from vitzoo.components.layers import maybe_drop_path
from vitzoo.components.windows import RelativePositionBias, window_partition, window_reverse
from vitzoo.config import PositiveFloat, PositiveInt, check_child


class RegionToLocalAttention(MultiHeadAttention):
    """MHSA used twice per block: among regional tokens, and per window as [region, locals].

    ``forward(x, local_bias=True)`` expects (B * windows, 1 + window^2, C) in the second case and
    adds the relative position bias to the local-local logits only (the regional token has no
    position inside the window).
    """

    def __init__(self, dim: int, num_heads: int, window: int, config: MhsaConfig) -> None:
        super().__init__(dim, num_heads, config)
        self.relative_position = RelativePositionBias((window, window), num_heads)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, local_bias: bool = False
    ) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        bias = None
        if local_bias:
            bias = F.pad(self.relative_position(), (1, 0, 1, 0))  # region row / column: 0
        return self.merge_heads(self.attend(q, k, v, mask, bias=bias))


class R2LBlock(nn.Module):
    """Regional self-attention, then local self-attention per window, then the MLP."""

    def __init__(
        self, dim: int, num_heads: int, window: int, config: RegionVitConfig, ctx: BuildContext
    ) -> None:
        super().__init__()
        eps = config.norm_eps
        self.window = (window, window)
        self.norm0 = nn.LayerNorm(dim, eps=eps)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = RegionToLocalAttention(dim, num_heads, window, config.attention)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = ctx.build("mlp", config.mlp, dim=dim)
        self.drop_path = maybe_drop_path(ctx.drop_path)

    def forward(
        self, regional: torch.Tensor, local: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) regional and (B, C, h*window, w*window) local maps -> the same."""
        b, c, h, w = regional.shape
        grid = local.shape[2:]
        r = map_to_tokens(regional)
        r = r + self.drop_path(self.attn(self.norm0(r)))
        windows = window_partition(local.permute(0, 2, 3, 1), self.window)  # (B*h*w, ws^2, C)
        x = torch.cat([r.reshape(-1, 1, c), windows], dim=1)
        x = x + self.drop_path(self.attn(self.norm1(x), local_bias=True))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        regional = tokens_to_map(x[:, 0].reshape(b, h * w, c), (h, w))
        local = window_reverse(x[:, 1:], self.window, grid).permute(0, 3, 1, 2)
        return regional, local


class RegionDownsample(nn.Module):
    """LayerNorm + GELU + 3x3 stride-2 grouped conv (one group per input channel), shared by the
    regional and the local maps (RegionViT's 'sc' projection)."""

    def __init__(self, in_dim: int, out_dim: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            ChannelLayerNorm(in_dim, eps=eps),
            nn.GELU(),
            nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1, groups=in_dim),
        )

    def forward(self, regional: torch.Tensor, local: torch.Tensor):
        return self.proj(regional), self.proj(local)


class RegionStage(nn.Module):
    """[downsample] -> R2L blocks; carries the (regional, local) pair of maps."""

    def __init__(self, downsample: nn.Module | None, blocks: list[R2LBlock]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(self, state: tuple[torch.Tensor, torch.Tensor]):
        regional, local = state
        if self.downsample is not None:
            regional, local = self.downsample(regional, local)
        for block in self.blocks:
            regional, local = block(regional, local)
        return regional, local


class RegionVitConfig(HierarchicalConfig):
    """RegionViT: regional-to-local attention over local and regional token maps.

    ``patch_size``: pixels per local token; ``window_size``: local tokens per region side (a
    regional token covers ``patch_size * window_size`` pixels). Per-stage lists: ``dims``,
    ``depths``, ``num_heads``. ``local_stem``: ``3conv`` (three 3x3 convs, RegionViT-Ti/S) or
    ``1conv`` (one 8x8 stride-4 conv, RegionViT-M/B).
    """

    type: Literal["regionvit"] = "regionvit"
    patch_size: PositiveInt = 4
    window_size: PositiveInt = 7
    dims: tuple[PositiveInt, ...] = (64, 128, 256, 512)
    depths: tuple[PositiveInt, ...] = (2, 2, 8, 2)
    num_heads: tuple[PositiveInt, ...] = (2, 4, 8, 16)
    local_stem: Literal["3conv", "1conv"] = "3conv"
    attention: MhsaConfig = MhsaConfig()
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    norm_eps: PositiveFloat = 1e-6

    @model_validator(mode="after")
    def _rules(self) -> RegionVitConfig:
        self.check_stages(positive=dict(window_size=self.window_size))
        n = len(self.dims)
        if self.local_stem == "3conv":
            if self.patch_size != 4:
                raise SpecValueError(
                    "patch_size", "the 3conv local stem has stride 4; allowed: 4 (or 1conv)"
                )
            if self.dims[0] % 4:
                raise SpecValueError("dims.0", "the 3conv stem needs a width divisible by 4")
        for i in range(1, n):
            if self.dims[i] % self.dims[i - 1]:
                raise SpecValueError(
                    f"dims.{i}",
                    f"the grouped downsampling conv maps {self.dims[i - 1]} channels to "
                    f"{self.dims[i]}; allowed: multiples of {self.dims[i - 1]}",
                )
        region = self.patch_size * self.window_size
        check_image_divisible(
            self.image_size,
            region * 2 ** (n - 1),
            f"patch_size {self.patch_size} x window_size {self.window_size} x 2^{n - 1} "
            f"downsamplings, so every stage has whole regions",
        )
        check_child(self.mlp, "mlp", dim=self.dims[0])
        return self


class RegionVit(HierarchicalModel):
    """RegionViT (regional-to-local attention).

    Local and regional stems -> R2L stages -> norm(regional tokens) -> mean -> head.
    """

    def __init__(self, config: RegionVitConfig, ctx: BuildContext) -> None:
        super().__init__()
        base = ctx.replace(in_chans=config.in_chans)
        dim0, eps = config.dims[0], config.norm_eps
        if config.local_stem == "3conv":
            self.local_stem = nn.Sequential(
                nn.Conv2d(config.in_chans, dim0 // 4, 3, stride=2, padding=1),
                ChannelLayerNorm(dim0 // 4, eps=eps),
                nn.GELU(),
                nn.Conv2d(dim0 // 4, dim0 // 2, 3, stride=2, padding=1),
                ChannelLayerNorm(dim0 // 2, eps=eps),
                nn.GELU(),
                nn.Conv2d(dim0 // 2, dim0, 3, stride=1, padding=1),
            )
        else:
            p = config.patch_size
            self.local_stem = nn.Conv2d(config.in_chans, dim0, 2 * p, stride=p, padding=p - 1)
        region = config.patch_size * config.window_size
        self.regional_stem = nn.Conv2d(config.in_chans, dim0, region, stride=region)
        rates = drop_path_schedule(config.drop_path_rate, config.depths)
        stages = []
        for i, depth in enumerate(config.depths):
            dim = config.dims[i]
            downsample = RegionDownsample(config.dims[i - 1], dim, eps) if i else None
            blocks = [
                R2LBlock(
                    dim,
                    config.num_heads[i],
                    config.window_size,
                    config,
                    base.replace(drop_path=rates[i][j]),
                )
                for j in range(depth)
            ]
            stages.append(RegionStage(downsample, blocks))
        self.stages = nn.ModuleList(stages)
        self.init_tail(config, base, config.dims[-1], map_norm_eps=eps)

    def run_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.regional_stem(x), self.local_stem(x)

    def stage_map(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return state[1]

    def finish(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # The head averages the normalised regional tokens.
        return self.norm(state[0])

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "relative_position" in n}


TINY = {
    "image_size": 32,
    "num_classes": 10,
    "patch_size": 4,
    "window_size": 2,
    "dims": (32, 64),
    "depths": (1, 2),
    "num_heads": (2, 2),
}


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "regionvit",
        RegionVit,
        RegionVitConfig,
        tags={"image", "feature-maps"},
        example=TINY,
        known_failures={
            "check_gradients_flow": (
                "by design: the classifier reads only the regional tokens, and the relative "
                "position bias of the last block acts on local-local logits only, so it gets no "
                "gradient from the logits (its local outputs feed the dense-prediction feature maps)"
            ),
        },
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "regionvit")
