"""Built-in plugin: NesT (Zhang et al., 2021, arXiv:2105.12723) and its ImageNet presets.

NesT nests standard transformer layers inside non-overlapping image blocks: at each level every
``block_size x block_size`` block of tokens runs its own (shared-weight) transformer layers with
a learned position embedding, then :class:`~vitzoo.components.downsample.BlockAggregation`
(conv 3x3, LayerNorm, 3x3/2 max-pool) merges every 2x2 neighbourhood of blocks into one block of
the next level. The paper's "one scalar per position" simplification in vit-pytorch is not
followed: position embeddings are full (blocks, tokens, dim) tables as in the paper. Attention
merges heads channel-major (``head_merge: dim-major``) like timm's port, so its weights load.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.nest_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.conv import Padding
from vitzoo.components.downsample import BlockAggregation
from vitzoo.components.hierarchical import (
    HierarchicalConfig,
    HierarchicalModel,
    build_stage_blocks,
    check_image_divisible,
)
from vitzoo.components.resample import resize_blocked_map
from vitzoo.components.windows import window_partition, window_reverse
from vitzoo.config import PositiveFloat, PositiveInt


class NestConfig(HierarchicalConfig):
    """NesT: local transformers in nested blocks, aggregated level by level.

    ``patch_size``: pixels per token (a strided conv); ``block_size``: tokens per block side;
    per-level lists ``dims``, ``depths``, ``num_heads`` (one entry per level).
    """

    type: Literal["nest"] = "nest"
    patch_size: PositiveInt = 4
    block_size: PositiveInt = 14
    dims: tuple[PositiveInt, ...] = (96, 192, 384)
    depths: tuple[PositiveInt, ...] = (2, 2, 8)
    num_heads: tuple[PositiveInt, ...] = (3, 6, 12)
    #: ``head_merge: dim-major``: timm's NesT (the port of the authors' JAX weights) lays the
    #: heads' outputs out channel-major before the projection; the same function family either
    #: way, and with it the released weights load as they are.
    attention: ComponentSpec("attention") = component_default(type="mhsa", head_merge="dim-major")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm")
    norm_eps: PositiveFloat = 1e-6
    #: Aggregation max-pool padding: ``same`` is TensorFlow's "SAME" (asymmetric on even maps),
    #: what the authors' JAX models were trained with (timm's ``nest_*_jx``, the released
    #: weights); ``symmetric`` is PyTorch's (timm's untrained ``nest_*``).
    padding: Padding = "symmetric"

    @model_validator(mode="after")
    def _rules(self) -> NestConfig:
        self.check_stages(positive=dict(patch_size=self.patch_size, block_size=self.block_size))
        n = len(self.dims)
        check_image_divisible(
            self.image_size,
            self.patch_size * self.block_size * 2 ** (n - 1),
            f"patch_size {self.patch_size} x block_size {self.block_size} x 2^{n - 1} "
            f"aggregations, so every level tiles into whole blocks",
        )
        self.check_children("attention", "mlp", "block", class_token=False, dim=self.dims[0])
        return self

    def level_grids(self) -> list[tuple[int, int]]:
        h, w = (s // self.patch_size for s in self.image_hw)
        return [(h // 2**i, w // 2**i) for i in range(len(self.dims))]


class NestLevel(nn.Module):
    """[aggregate] -> split into blocks -> + positions -> transformer layers -> merge blocks."""

    def __init__(
        self,
        aggregate: nn.Module,
        blocks: list[nn.Module],
        dim: int,
        grid: tuple[int, int],
        block_size: int,
    ) -> None:
        super().__init__()
        self.aggregate = aggregate
        self.block_size = (block_size, block_size)
        self.grid = grid
        num_blocks = (grid[0] // block_size) * (grid[1] // block_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_blocks, block_size * block_size, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(blocks)

    def resample_tensor(
        self, name: str, tensor: torch.Tensor, old: NestLevel
    ) -> torch.Tensor | None:
        """Positions for another image size: the blocked table resampled as one map."""
        if name != "pos_embed":
            return None
        return resize_blocked_map(tensor, self.block_size, old.grid, self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.aggregate(x)
        b, c, h, w = x.shape
        tokens = window_partition(x.permute(0, 2, 3, 1), self.block_size)  # (B*T, n, C)
        tokens = (tokens.view(b, *self.pos_embed.shape[1:]) + self.pos_embed).flatten(0, 1)
        for block in self.blocks:
            tokens = block(tokens)
        return window_reverse(tokens, self.block_size, (h, w)).permute(0, 3, 1, 2)


class Nest(HierarchicalModel):
    """NesT (nested hierarchical transformer).

    Patch embedding -> NesT levels (local block transformers + aggregation) -> norm -> head.
    """

    def __init__(self, config: NestConfig, ctx: BuildContext) -> None:
        super().__init__()
        base = ctx.replace(in_chans=config.in_chans)
        self.stem = nn.Conv2d(
            config.in_chans, config.dims[0], config.patch_size, stride=config.patch_size
        )
        block_grid = (config.block_size, config.block_size)
        self.stages = nn.ModuleList(
            NestLevel(
                BlockAggregation(config.dims[i - 1], dim, config.norm_eps, config.padding)
                if i
                else nn.Identity(),
                build_stage_blocks(base, config, i, block_grid),
                dim,
                grid,
                config.block_size,
            )
            for i, (dim, grid) in enumerate(zip(config.dims, config.level_grids(), strict=True))
        )
        self.init_tail(config, base, config.dims[-1], map_norm_eps=config.norm_eps)


TINY = {
    "image_size": 32,
    "num_classes": 10,
    "patch_size": 2,
    "block_size": 4,
    "dims": (32, 64),
    "depths": (1, 2),
    "num_heads": (2, 2),
    "padding": "same",  # the released models' pooling, so the checks cover it
}


@hookimpl
def register_architectures(register: Any) -> None:
    register("nest", Nest, NestConfig, tags={"image", "feature-maps"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "nest")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
