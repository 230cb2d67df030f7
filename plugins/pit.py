"""Built-in plugin: PiT, the Pooling-based Vision Transformer (Heo et al., ICCV 2021).

PiT is a ViT whose token grid shrinks between stages: a depthwise strided convolution pools the
patch-token map (doubling its width) and a linear layer widens the class token. Inside a stage the
blocks are the ordinary registered pre-norm blocks with any registered attention, so the only
PiT-specific code is the overlapping patch stem and :class:`TokenPooling`.

``forward_features`` returns the final (normed) token sequence, class token first, because PiT
classifies from the class token; ``forward_intermediates`` returns each stage's (B, C, H, W) map.

``distillation_token: true`` (the paper's distilled PiT, timm's ``pit_*_distilled_224``) adds a
second prefix token that travels with the class token through every stage (widened by the same
pooling Linear); with the ``distillation`` head the two feed the class and distillation
classifiers (their mean in eval), as in DeiT.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.pit_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.hierarchical import (
    HierarchicalConfig,
    HierarchicalModel,
    build_stage_blocks,
    conv_out,
    map_to_tokens,
    tokens_to_map,
)
from vitzoo.config import PositiveInt, Rate, SpecValueError


class PitConfig(HierarchicalConfig):
    """PiT: overlapping patch stem, stages of pre-norm blocks, depthwise-conv token pooling."""

    type: Literal["pit"] = "pit"
    patch_size: PositiveInt = 16
    stride: PositiveInt = 8
    #: Per-head width of each stage; the stage width is base_dims[i] * num_heads[i].
    base_dims: list[PositiveInt] = [32, 32, 32]
    depths: list[PositiveInt] = [2, 6, 4]
    num_heads: list[PositiveInt] = [2, 4, 8]
    attention: ComponentSpec("attention") = component_default(type="mhsa")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm")
    emb_dropout: Rate = 0.0
    #: A DeiT-style distillation token next to the class token (use with head: distillation).
    distillation_token: bool = False

    @model_validator(mode="after")
    def _rules(self) -> PitConfig:
        self.check_stages(
            reference="base_dims",
            positive=dict(patch_size=self.patch_size, stride=self.stride),
            heads_divide=False,  # the stage width is base_dims x num_heads by construction
            distillation=self.distillation_token,
        )
        if min(self.image_hw) < self.patch_size:
            raise SpecValueError(
                "image_size",
                f"{self.image_size} is smaller than patch_size={self.patch_size}; "
                f"allowed: >= {self.patch_size}",
            )
        self.check_children("attention", "mlp", "block", image_size=self.image_hw, class_token=True)
        return self

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self.distillation_token else 1

    @property
    def dims(self) -> list[int]:
        return [b * h for b, h in zip(self.base_dims, self.num_heads, strict=True)]


class TokenPooling(nn.Module):
    """Depthwise 3x3 stride-2 conv on the map (width x2 via channel multiplier); Linear on cls."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, stride + 1, stride, stride // 2, groups=in_dim)
        self.cls = nn.Linear(in_dim, out_dim)

    def forward(self, cls: torch.Tensor, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls(cls), self.conv(fmap)


class PitStage(nn.Module):
    """[token pooling] -> blocks over [prefix tokens; patch tokens]; state is (prefix, map).

    The prefix is the class token, or the class and distillation tokens (B, 2, D).
    """

    def __init__(self, pool: nn.Module | None, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.pool = pool
        self.blocks = blocks

    def forward(
        self, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cls, fmap = state
        if self.pool is not None:
            cls, fmap = self.pool(cls, fmap)
        grid = fmap.shape[-2:]
        tokens = torch.cat([cls, map_to_tokens(fmap)], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        n = cls.shape[1]
        return tokens[:, :n], tokens_to_map(tokens[:, n:], grid)


class PoolingVisionTransformer(HierarchicalModel):
    """PiT (pooling-based ViT)."""

    num_prefix_tokens = 1
    global_pool_name = "token"

    def __init__(self, config: PitConfig, ctx: BuildContext) -> None:
        super().__init__()
        dims = config.dims
        grid = tuple(conv_out(s, config.patch_size, config.stride, 0) for s in config.image_hw)
        self.stem = nn.Conv2d(config.in_chans, dims[0], config.patch_size, config.stride)
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], *grid))
        self.num_prefix_tokens = config.num_prefix_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_prefix_tokens, dims[0]))
        self.pos_drop = nn.Dropout(config.emb_dropout)
        stages = []
        for i, dim in enumerate(dims):
            pool = None
            if i > 0:
                pool = TokenPooling(dims[i - 1], dim)
                grid = tuple(conv_out(s, 3, 2, 1) for s in grid)
            stages.append(
                PitStage(
                    pool,
                    build_stage_blocks(
                        ctx, config, i, grid, num_prefix_tokens=self.num_prefix_tokens
                    ),
                )
            )
        self.stages = nn.ModuleList(stages)
        self.init_tail(config, ctx, dims[-1], norm=nn.LayerNorm(dims[-1], eps=1e-6))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def run_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.pos_drop(self.stem(x) + self.pos_embed)
        return self.cls_token.expand(x.shape[0], -1, -1), fmap

    def stage_map(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return state[1]

    def finish(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        cls, fmap = state
        return self.norm(torch.cat([cls, map_to_tokens(fmap)], dim=1))

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The class token, or (class, distillation) tokens (B, 2, D) for the distillation head."""
        if self.num_prefix_tokens == 2 and self._paired_head:
            return features[:, :2]
        return features[:, 0]


TINY: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 8,
    "stride": 4,
    "base_dims": [16, 16],
    "depths": [1, 1],
    "num_heads": [2, 4],
    "num_classes": 10,
}


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "pit", PoolingVisionTransformer, PitConfig, tags={"image", "feature-maps"}, example=TINY
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "pit")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
