"""Positional encodings: ``forward(tokens, grid, num_prefix_tokens) -> tokens``.

``tokens`` holds ``num_prefix_tokens`` prefix tokens (cls / distillation) followed by the patch
tokens laid out on ``grid``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.config import ComponentConfig, NonNegativeFloat, PositiveFloat, SpecValueError

#: How a 2-D learned table may be resampled (1-D tables resample linearly, 3-D trilinearly).
TableInterpolation = Literal["bicubic", "bilinear"]


@dataclass(frozen=True)
class TableResampling:
    """How a learned position table is resampled to another grid.

    The released models that people fine-tune were trained at one size and resample their
    table at another, each in its own way, and the resampled table is part of the function:

    * ``interpolation``: bicubic (timm, DINOv2, DeiT, AIMv2) or bilinear, on 2-D grids;
    * ``antialias``: torch's antialiased kernel. It widens the kernel when shrinking, and its
      bicubic uses the PIL coefficient a = -0.5 rather than -0.75, so it differs from the plain
      kernel when enlarging too. timm's ``resample_abs_pos_embed`` and DINOv2 with registers
      (official hub and Hugging Face) use it; the original DINOv2 hub models and Hugging Face's
      ``Dinov2Model`` do not;
    * ``offset``: DINOv2's ``interpolate_offset`` (0.1 in the original hub models): resample
      with scale factors ``(new + offset) / old`` instead of to the target size. The output
      size is the same, but the sampling positions follow the scale factor, so the table is
      not the one a size-based resample gives.

    * ``in_float32``: resample in float32 whatever the table's dtype (timm, DINOv2, BEiT), or in
      the table's own dtype (Hugging Face's CLIP and SigLIP): the two differ only in a float64
      model, by float32 rounding.

    The defaults (bicubic, no antialias, no offset, float32) are what vitzoo always did.
    """

    interpolation: str = "bicubic"
    antialias: bool = False
    offset: float = 0.0
    in_float32: bool = True


def resize_grid_embedding(
    pos: torch.Tensor,
    old_grid: tuple[int, ...],
    new_grid: tuple[int, ...],
    resampling: TableResampling | None = None,
) -> torch.Tensor:
    """Resample a (1, prod(old_grid), D) table to ``new_grid`` (2-D: ``resampling``'s method,
    bicubic by default; 1-D linear, 3-D trilinear), in float32 unless ``resampling`` says to
    keep the table's dtype."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    how = resampling or TableResampling()
    dim = pos.shape[-1]
    grid = pos.reshape(1, *old_grid, dim).movedim(-1, 1)
    grid = grid.float() if how.in_float32 else grid
    two_d = len(old_grid) == 2
    mode = how.interpolation if two_d else {1: "linear", 3: "trilinear"}[len(old_grid)]
    options: dict[str, Any] = {"mode": mode, "align_corners": False}
    if two_d:
        options["antialias"] = how.antialias
    if how.offset:
        scale = tuple(float(n + how.offset) / o for n, o in zip(new_grid, old_grid, strict=True))
        grid = F.interpolate(grid, scale_factor=scale, **options)
        if tuple(grid.shape[2:]) != tuple(new_grid):
            raise ValueError(
                f"resampling {tuple(old_grid)} -> {tuple(new_grid)} with offset {how.offset} "
                f"gave {tuple(grid.shape[2:])}"
            )
    else:
        grid = F.interpolate(grid, size=tuple(new_grid), **options)
    return grid.movedim(1, -1).reshape(1, -1, dim).to(pos.dtype)


class LearnedPosConfig(ComponentConfig):
    """A learned table, one vector per position; resampled when the token grid changes."""

    type: Literal["learned"] = "learned"
    #: One table entry per class / distillation token too (ViT, DeiT, DINOv2); false: the
    #: table covers the patches only and prefix tokens join after it (DeiT III, timm's DINOv2
    #: with registers, big_vision).
    include_prefix: bool = True
    init_std: PositiveFloat = 0.02
    #: How the table is resampled when the patch grid changes (``set_input_size``,
    #: ``dynamic_img_size``, inputs of another size, weights made at another size); see
    #: :class:`TableResampling`. bicubic or bilinear (2-D grids).
    interpolation: TableInterpolation = "bicubic"
    #: torch's antialiased resampling (timm; DINOv2 with registers).
    antialias: bool = False
    #: DINOv2's ``interpolate_offset`` (0.1 in the original hub models): scale factors
    #: ``(new + offset) / old`` instead of the target size. Below 1.
    interpolate_offset: NonNegativeFloat = 0.0
    #: Resample in float32 (timm, DINOv2) or in the table's own dtype (Hugging Face's CLIP and
    #: SigLIP): a difference only a float64 model shows.
    resample_in_float32: bool = True

    def check(self, spatial_dims: int = 2, **_: Any) -> None:
        if not self.interpolate_offset < 1.0:
            raise SpecValueError(
                "interpolate_offset", f"must be in [0, 1), got {self.interpolate_offset}"
            )
        if spatial_dims != 2:
            for name, default in (("interpolation", "bicubic"), ("antialias", False)):
                if getattr(self, name) != default:
                    raise SpecValueError(
                        name,
                        f"applies to 2-D patch grids; this model's grid has {spatial_dims} axes "
                        f"(resampled {'linearly' if spatial_dims == 1 else 'trilinearly'})",
                    )

    def resampling(self) -> TableResampling:
        return TableResampling(
            self.interpolation, self.antialias, self.interpolate_offset, self.resample_in_float32
        )


class LearnedPositions(nn.Module):
    def __init__(
        self,
        dim: int,
        grid: tuple[int, ...],
        num_prefix: int,
        init_std: float,
        resampling: TableResampling | None = None,
    ):
        super().__init__()
        self.grid = tuple(grid)
        self.num_prefix = num_prefix
        self.resampling = resampling or TableResampling()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_prefix + math.prod(grid), dim))
        nn.init.trunc_normal_(self.pos_embed, std=init_std)

    def table_for(self, grid: tuple[int, ...]) -> torch.Tensor:
        """The table for ``grid``: this one, or its patch part resampled (prefix rows kept)."""
        if tuple(grid) == self.grid:
            return self.pos_embed
        prefix, patches = self.pos_embed[:, : self.num_prefix], self.pos_embed[:, self.num_prefix :]
        patches = resize_grid_embedding(patches, self.grid, grid, self.resampling)
        return torch.cat([prefix, patches], dim=1) if self.num_prefix else patches

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, ...], num_prefix_tokens: int
    ) -> torch.Tensor:
        table = self.table_for(grid)
        if self.num_prefix:  # the table covers the prefix tokens too
            return tokens + table
        return torch.cat(
            [tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:] + table], dim=1
        )

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A checkpoint trained at another resolution: resample its table to this grid.
        key = prefix + "pos_embed"
        stored = state_dict.get(key)
        if (
            stored is not None
            and stored.shape != self.pos_embed.shape
            and stored.shape[-1] == self.pos_embed.shape[-1]
        ):
            old_n = stored.shape[1] - self.num_prefix
            side = round(old_n ** (1 / len(self.grid)))
            if side ** len(self.grid) == old_n:
                old_grid = (side,) * len(self.grid)
                resized = resize_grid_embedding(
                    stored[:, self.num_prefix :], old_grid, self.grid, self.resampling
                )
                state_dict[key] = torch.cat([stored[:, : self.num_prefix], resized], dim=1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def build_learned(config: LearnedPosConfig, ctx: BuildContext) -> LearnedPositions:
    """Learned absolute positions (ViT, DeiT)."""
    num_prefix = ctx.num_prefix_tokens if config.include_prefix else 0
    return LearnedPositions(ctx.dim, ctx.grid, num_prefix, config.init_std, config.resampling())


def sincos_table(
    grid: tuple[int, ...],
    dim: int,
    temperature: float,
    device: Any = None,
    *,
    reverse_axes: bool = False,
    endpoint: bool = False,
) -> torch.Tensor:
    """Fixed sin-cos table for a 1D/2D/3D grid: each axis gets an equal share of the channels.

    Per axis the block is ``[sin(c * omega), cos(c * omega)]`` with integer coordinates ``c`` and
    ``omega_i = 1 / temperature ** (i / n)`` for ``i < n`` (``n`` = channels per sin or cos part).
    ``endpoint=True`` uses ``i / (n - 1)`` so the last frequency is exactly ``1 / temperature``,
    and ``reverse_axes=True`` puts the last grid axis (x) first: together they are big_vision's
    ``posemb_sincos_2d`` ([sin x, cos x, sin y, cos y]) that SimpleViT was trained with.
    """
    axes = len(grid)
    per_axis = dim // (2 * axes)
    steps = max(per_axis - 1, 1) if endpoint else max(per_axis, 1)
    omega = 1.0 / temperature ** (
        torch.arange(per_axis, device=device, dtype=torch.float32) / steps
    )
    coords = torch.meshgrid(
        *[torch.arange(n, device=device, dtype=torch.float32) for n in grid], indexing="ij"
    )
    parts = []
    for c in reversed(coords) if reverse_axes else coords:
        angles = c.reshape(-1, 1) * omega.reshape(1, -1)
        parts.extend([angles.sin(), angles.cos()])
    table = torch.cat(parts, dim=1)
    if table.shape[1] < dim:  # pad when dim is not a multiple of 2 * axes
        table = F.pad(table, (0, dim - table.shape[1]))
    return table.unsqueeze(0)


class SinCosConfig(ComponentConfig):
    """Fixed 2D (or 3D for video) sin-cos positions (SimpleViT); nothing to learn or resize."""

    type: Literal["sincos"] = "sincos"
    temperature: PositiveFloat = 10000.0
    #: ``grid``: one sin-cos table per grid axis over the patch tokens (SimpleViT);
    #: ``sequence``: the 1D Transformer table over the whole sequence, prefix tokens included
    #: (T2T-ViT, CCT's "sine" option).
    layout: Literal["grid", "sequence"] = "grid"
    #: Last grid axis first (x, then y; for video x, y, t), as big_vision / vit-pytorch order it.
    reverse_axes: bool = False
    #: Frequencies ``1 / T ** (i / (n - 1))`` (the last one exactly ``1 / T``, big_vision) instead
    #: of ``1 / T ** (i / n)``.
    endpoint: bool = False

    def check(self, dim: int | None = None, spatial_dims: int = 2, **_: Any) -> None:
        if self.layout == "sequence":
            spatial_dims = 1
        if dim is not None and dim % (2 * spatial_dims):
            raise SpecValueError(
                "type", f"sincos positions need dim divisible by {2 * spatial_dims}; got dim={dim}"
            )


class SinCosPositions(nn.Module):
    def __init__(
        self,
        dim: int,
        temperature: float,
        layout: str = "grid",
        *,
        reverse_axes: bool = False,
        endpoint: bool = False,
    ):
        super().__init__()
        self.dim = dim
        self.temperature = temperature
        self.layout = layout
        self.table_options = {"reverse_axes": reverse_axes, "endpoint": endpoint}

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, ...], num_prefix_tokens: int
    ) -> torch.Tensor:
        if self.layout == "sequence":
            length = (tokens.shape[1],)
            table = sincos_table(
                length, self.dim, self.temperature, tokens.device, **self.table_options
            )
            return tokens + table.to(tokens.dtype)
        table = sincos_table(
            tuple(grid), self.dim, self.temperature, tokens.device, **self.table_options
        ).to(tokens.dtype)
        return torch.cat(
            [tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:] + table], dim=1
        )


def build_sincos(config: SinCosConfig, ctx: BuildContext) -> SinCosPositions:
    """Fixed sin-cos positions."""
    return SinCosPositions(
        ctx.dim,
        config.temperature,
        config.layout,
        reverse_axes=config.reverse_axes,
        endpoint=config.endpoint,
    )


class NoPosConfig(ComponentConfig):
    """No positional information (for tokenisers that carry it themselves, e.g. CCT's convs)."""

    type: Literal["none"] = "none"


class NoPositions(nn.Module):
    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, ...], num_prefix_tokens: int
    ) -> torch.Tensor:
        return tokens


def build_none(config: NoPosConfig, ctx: BuildContext) -> NoPositions:
    """No positional encoding."""
    return NoPositions()
