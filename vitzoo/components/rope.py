"""2-D rotary position embedding for ViTs (Heo et al., ECCV 2024, arXiv:2403.13298).

RoPE rotates each pair of query/key channels by an angle proportional to the token's position,
so ``q . k`` depends on the *relative* offset of the two tokens. For images the paper gives two
forms (reference: naver-ai/rope-vit, ``models/vit_rope.py``):

* **axial**: half of the channel pairs rotate with the column ``x``, the other half with the row
  ``y``, at frequencies ``1 / theta^(4i / d)`` (``theta = 100`` in the paper);
* **mixed** (RoPE-Mixed): every pair rotates by ``fx * x + fy * y`` with *learned* per-head
  frequencies, initialised as the axial magnitudes turned by a random angle per head
  (``theta = 10``).

Prefix tokens (class, distillation, registers) have no position and are not rotated. Channel
pairs are adjacent (``(x0, x1), (x2, x3), ...``) as in the reference's complex-number view; the
rotation is written with real cos/sin so it exports to ONNX.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

RopeKind = Literal["axial", "mixed"]
DEFAULT_THETA: dict[str, float] = {"axial": 100.0, "mixed": 10.0}


def grid_coordinates(grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major token coordinates: ``x`` (column) and ``y`` (row), float, each (h * w,)."""
    h, w = grid
    index = torch.arange(h * w, dtype=torch.float32)
    return index % w, torch.div(index, w, rounding_mode="floor")


def axial_magnitudes(head_dim: int, theta: float) -> torch.Tensor:
    """The ``head_dim / 4`` frequencies each axis uses."""
    exponents = torch.arange(0, head_dim, 4, dtype=torch.float32)[: head_dim // 4] / head_dim
    return 1.0 / (theta**exponents)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` (..., N, d) by angles given as cos/sin (..., N, d/2)."""
    pairs = x.unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class Rotary2d(nn.Module):
    """Rotates the grid tokens of (B, H, N, d) queries/keys; the first ``num_prefix`` stay as they are."""

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        grid: tuple[int, int],
        num_prefix: int,
        kind: RopeKind = "axial",
        theta: float | None = None,
    ) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
        self.kind = kind
        self.grid = tuple(grid)
        self.num_prefix = num_prefix
        theta = DEFAULT_THETA[kind] if theta is None else theta
        x, y = grid_coordinates(self.grid)
        magnitudes = axial_magnitudes(head_dim, theta)
        if kind == "axial":
            angles = torch.cat((x[:, None] * magnitudes, y[:, None] * magnitudes), dim=-1)
            # Derived from the grid, so not saved: a checkpoint holds only learned tensors.
            self.register_buffer("cos", angles.cos(), persistent=False)
            self.register_buffer("sin", angles.sin(), persistent=False)
        else:
            turn = torch.rand(num_heads, 1) * 2 * math.pi
            fx = torch.cat((magnitudes * turn.cos(), magnitudes * (turn + math.pi / 2).cos()), -1)
            fy = torch.cat((magnitudes * turn.sin(), magnitudes * (turn + math.pi / 2).sin()), -1)
            self.freqs = nn.Parameter(torch.stack((fx, fy)))  # (2, heads, d/2)
            self.register_buffer("coords", torch.stack((x, y)), persistent=False)  # (2, N)

    def angles(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "axial":
            return self.cos, self.sin
        # (heads, N, d/2) = x * fx + y * fy
        theta = self.coords[0][None, :, None] * self.freqs[0][:, None, :]
        theta = theta + self.coords[1][None, :, None] * self.freqs[1][:, None, :]
        return theta.cos(), theta.sin()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        tokens = t.shape[-2] - self.num_prefix
        if tokens != self.grid[0] * self.grid[1]:
            raise ValueError(
                f"2-D RoPE was built for a {self.grid[0]}x{self.grid[1]} token grid "
                f"(+{self.num_prefix} prefix tokens), got {t.shape[-2]} tokens"
            )
        cos, sin = self.angles()
        cos, sin = cos.to(t.dtype), sin.to(t.dtype)
        if self.num_prefix == 0:
            return rotate_pairs(t, cos, sin)
        prefix, rest = t[..., : self.num_prefix, :], t[..., self.num_prefix :, :]
        return torch.cat((prefix, rotate_pairs(rest, cos, sin)), dim=-2)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, grid={self.grid}, num_prefix={self.num_prefix}"
