"""Factorised 2-D positions: a learned row table plus a learned column table.

NaViT (Dehghani et al., 2023, Sec. 2.1) replaces the ViT's one table per grid cell by two
tables, one per axis: the patch in row ``y``, column ``x`` gets ``row[y] + col[x]``. An image of
any aspect ratio takes the first ``h`` rows and ``w`` columns it needs, so every image up to the
table sizes has exact positions without resampling -- the property a batch of images of
different shapes needs. This is vit-pytorch's ``NaViT`` (``pos_embed_height`` /
``pos_embed_width``, indexed by each patch's absolute row and column).

The tables cover the grid of the spec's ``image_size``: the largest image the model takes.
A larger grid is an input error naming the limit (the model exposes it as ``max_grid`` so a data
pipeline can size images to fit). Prefix tokens (class, registers) get no position.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.config import ComponentConfig, PositiveFloat, SpecValueError
from vitzoo.errors import InputSizeError


class FactorizedPosConfig(ComponentConfig):
    """Learned row + column tables indexed by each patch's row and column (NaViT)."""

    type: Literal["factorized"] = "factorized"
    init_std: PositiveFloat = 0.02

    def check(self, spatial_dims: int = 2, **_: Any) -> None:
        if spatial_dims != 2:
            raise SpecValueError(
                "type", f"factorized positions need a 2-D patch grid; this one has {spatial_dims}"
            )


class FactorizedPositions(nn.Module):
    """``tokens + row[y] + col[x]`` over the patch tokens of a (h, w) grid."""

    def __init__(self, dim: int, grid: tuple[int, ...], init_std: float) -> None:
        super().__init__()
        rows, cols = grid
        self.max_grid = (int(rows), int(cols))
        self.pos_embed_y = nn.Parameter(torch.zeros(rows, dim))
        self.pos_embed_x = nn.Parameter(torch.zeros(cols, dim))
        nn.init.trunc_normal_(self.pos_embed_y, std=init_std)
        nn.init.trunc_normal_(self.pos_embed_x, std=init_std)

    def table(self, grid: tuple[int, ...]) -> torch.Tensor:
        """The (h * w, D) positions of a grid, row-major."""
        h, w = grid
        if h > self.max_grid[0] or w > self.max_grid[1]:
            raise InputSizeError(
                f"a {h}x{w} patch grid exceeds the factorized position tables "
                f"({self.max_grid[0]} rows, {self.max_grid[1]} columns): the largest image is "
                "the spec's image_size; build the model with a larger one"
            )
        return (self.pos_embed_y[:h, None, :] + self.pos_embed_x[None, :w, :]).reshape(h * w, -1)

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, ...], num_prefix_tokens: int
    ) -> torch.Tensor:
        table = self.table(tuple(grid)).to(tokens.dtype)
        if not num_prefix_tokens:
            return tokens + table
        return torch.cat(
            [tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:] + table], dim=1
        )

    def resample_tensor(
        self, name: str, tensor: torch.Tensor, old_module: nn.Module
    ) -> torch.Tensor | None:
        """Another ``image_size`` (``set_input_size``): row ``y`` stays row ``y``. A smaller
        table keeps its first entries; a larger one keeps the learned ones and this module's
        fresh initial values for the new rows."""
        if name not in ("pos_embed_y", "pos_embed_x"):
            return None
        fresh = getattr(self, name).detach()
        keep = min(tensor.shape[0], fresh.shape[0])
        return torch.cat([tensor[:keep].to(fresh.dtype), fresh[keep:].to(fresh.device)], dim=0)


def build_factorized(config: FactorizedPosConfig, ctx: BuildContext) -> FactorizedPositions:
    """Factorised row + column positions (NaViT)."""
    return FactorizedPositions(ctx.dim, ctx.grid, config.init_std)
