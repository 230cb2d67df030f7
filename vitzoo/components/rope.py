"""2-D rotary position embedding for ViTs (Heo et al., ECCV 2024, arXiv:2403.13298).

RoPE rotates each pair of query/key channels by an angle proportional to the token's position,
so ``q . k`` depends on the *relative* offset of the two tokens. For images the paper gives two
forms (reference: naver-ai/rope-vit, ``models/vit_rope.py``):

* **axial**: half of the channel pairs rotate with the column ``x``, the other half with the row
  ``y``, at frequencies ``1 / theta^(4i / d)`` (``theta = 100`` in the paper);
* **mixed** (RoPE-Mixed): every pair rotates by ``fx * x + fy * y`` with *learned* per-head
  frequencies, initialised as the axial magnitudes turned by a random angle per head
  (``theta = 10``).

Prefix tokens (class, distillation, registers) have no position and are not rotated. The
rotation is written with real cos/sin so it exports to ONNX.

Three layout options make the same rotation compute EVA-02's (Fang et al., 2023,
arXiv:2303.11331; timm ``RotaryEmbeddingCat`` as EVA-02 builds it: ``theta = 10000``):

* ``pairs``: which channels rotate together -- ``adjacent`` (``(x0, x1), (x2, x3), ...``: the
  paper's complex-number view, EVA-02's interleaved layout) or ``halves`` (channel ``i`` with
  ``i + d/2``: the "rotate half" layout of GPT-NeoX / LLaMA-style code);
* ``axis_order``: whether the first half of the pairs turns with the column (``x-first``, the
  paper's) or the row (``y-first``, EVA-02's ``ij`` grid);
* ``ref_grid``: coordinates rescaled so any grid spans the reference grid (``y * ref_h / h``);
  EVA-02 fine-tunes at 448 px keep the rotation of their 224-px pre-training grid this way.

:class:`RopeAttention` is multi-head attention with the rotation on queries and keys, registered
by the core as the ``rope`` attention (families build on it: EVA-02). Use it with ``posenc:
{type: none}`` for RoPE-only models, or beside learned positions as the paper's "+APE" variants
(and EVA-02) do.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.grid import FollowsGrid
from vitzoo.config import PositiveFloat, PositiveInt, SpecValueError

RopeKind = Literal["axial", "mixed"]
RopePairs = Literal["adjacent", "halves"]
RopeAxisOrder = Literal["x-first", "y-first"]
DEFAULT_THETA: dict[str, float] = {"axial": 100.0, "mixed": 10.0}


def grid_coordinates(
    grid: tuple[int, int], ref_grid: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major token coordinates: ``x`` (column) and ``y`` (row), float, each (h * w,).

    With ``ref_grid`` they are rescaled to span it: ``x / w * ref_w`` (divided first, as EVA-02's
    reference computes it, so the float32 values are the same)."""
    h, w = grid
    index = torch.arange(h * w, dtype=torch.float32)
    x, y = index % w, torch.div(index, w, rounding_mode="floor")
    if ref_grid is not None:
        x, y = x / w * ref_grid[1], y / h * ref_grid[0]
    return x, y


def axial_magnitudes(head_dim: int, theta: float) -> torch.Tensor:
    """The ``head_dim / 4`` frequencies each axis uses."""
    exponents = torch.arange(0, head_dim, 4, dtype=torch.float32)[: head_dim // 4] / head_dim
    return 1.0 / (theta**exponents)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` (..., N, d) by angles given as cos/sin (..., N, d/2)."""
    pairs = x.unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def rotate_halves(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel ``i`` with channel ``i + d/2`` of ``x`` (..., N, d) by cos/sin (..., N, d/2)."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


ROTATIONS = {"adjacent": rotate_pairs, "halves": rotate_halves}


class Rotary2d(FollowsGrid, nn.Module):
    """Rotates the grid tokens of (B, H, N, d) queries/keys; the first ``num_prefix`` stay as they are.

    Positions are coordinates, so the rotation extends to any grid: with ``dynamic_img_size``
    the host hands it each input's grid (:meth:`follow_grid`).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        grid: tuple[int, int],
        num_prefix: int,
        kind: RopeKind = "axial",
        theta: float | None = None,
        *,
        pairs: RopePairs = "adjacent",
        axis_order: RopeAxisOrder = "x-first",
        ref_grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
        self.kind = kind
        self.grid = tuple(grid)
        self.num_prefix = num_prefix
        theta = DEFAULT_THETA[kind] if theta is None else theta
        self.head_dim, self.theta = head_dim, theta
        self.pairs, self.axis_order = pairs, axis_order
        self.ref_grid = None if ref_grid is None else (int(ref_grid[0]), int(ref_grid[1]))
        self.rotate = ROTATIONS[pairs]
        x, y = grid_coordinates(self.grid, self.ref_grid)
        magnitudes = axial_magnitudes(head_dim, theta)
        if kind == "axial":
            cos, sin = self.axial_tables(x, y)
            # Derived from the grid, so not saved: a checkpoint holds only learned tensors.
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
        else:
            turn = torch.rand(num_heads, 1) * 2 * math.pi
            fx = torch.cat((magnitudes * turn.cos(), magnitudes * (turn + math.pi / 2).cos()), -1)
            fy = torch.cat((magnitudes * turn.sin(), magnitudes * (turn + math.pi / 2).sin()), -1)
            self.freqs = nn.Parameter(torch.stack((fx, fy)))  # (2, heads, d/2)
            self.register_buffer("coords", torch.stack((x, y)), persistent=False)  # (2, N)

    def axial_tables(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        magnitudes = axial_magnitudes(self.head_dim, self.theta).to(x.device)
        first, second = (x, y) if self.axis_order == "x-first" else (y, x)
        angles = torch.cat((first[:, None] * magnitudes, second[:, None] * magnitudes), dim=-1)
        return angles.cos(), angles.sin()

    def follow_grid(self, grid: tuple[int, ...]) -> None:
        """Recompute the coordinate tables for another token grid."""
        if tuple(grid) == self.grid:
            return
        self.grid = tuple(grid)
        like = self.cos if self.kind == "axial" else self.coords
        x, y = (c.to(like.device) for c in grid_coordinates(self.grid, self.ref_grid))
        if self.kind == "axial":
            self.cos, self.sin = (t.to(like.dtype) for t in self.axial_tables(x, y))
        else:
            self.coords = torch.stack((x, y)).to(like.dtype)

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
            return self.rotate(t, cos, sin)
        prefix, rest = t[..., : self.num_prefix, :], t[..., self.num_prefix :, :]
        return torch.cat((prefix, self.rotate(rest, cos, sin)), dim=-2)

    def extra_repr(self) -> str:
        ref = "" if self.ref_grid is None else f", ref_grid={self.ref_grid}"
        return (
            f"kind={self.kind}, grid={self.grid}, num_prefix={self.num_prefix}, "
            f"pairs={self.pairs}, axis_order={self.axis_order}{ref}"
        )


# -- the attention ---------------------------------------------------------------------------
class RopeAttentionConfig(MhsaConfig):
    """Multi-head attention with 2-D rotary positions on q and k (axial or RoPE-Mixed)."""

    type: Literal["rope"] = "rope"  # type: ignore[assignment]
    #: Goes through ``split_heads`` / ``attend``, so ``cosine`` and ``key_bias`` act here.
    shared_weight_options: ClassVar[bool] = True
    rope: RopeKind = "axial"
    #: Frequency base; null takes the paper's value (100 axial, 10 mixed; EVA-02 uses 10000).
    theta: PositiveFloat | None = None
    #: Which channels rotate together: ``adjacent`` (x0 with x1, ...) or ``halves`` (x_i with
    #: x_{i+d/2}, "rotate half"). Both rotate by the same angles; weights trained with one
    #: layout compute their function only with it.
    pairs: RopePairs = "adjacent"
    #: Axial RoPE: whether the first half of the pairs turns with the column (``x-first``, the
    #: paper's) or with the row (``y-first``, EVA-02's).
    axis_order: RopeAxisOrder = "x-first"
    #: Rescale coordinates so that every grid spans this [h, w] grid (EVA-02: the 16x16 grid it
    #: was pre-trained on); null: integer patch coordinates.
    ref_grid: tuple[PositiveInt, PositiveInt] | None = None

    def check(self, dim: int | None = None, num_heads: int | None = None, **_: Any) -> None:
        if self.theta is not None and not self.theta > 1.0:
            raise SpecValueError("theta", f"must be > 1, got {self.theta}")
        if self.rope == "mixed" and self.axis_order != "x-first":
            raise SpecValueError(
                "axis_order",
                "RoPE-Mixed learns one frequency per axis and pair, so there is no axis order; "
                "leave axis_order at x-first (it applies to rope: axial)",
            )
        head_dim = self.head_dim or (dim // num_heads if dim and num_heads else None)
        if head_dim is not None and head_dim % 4:
            raise SpecValueError(
                "head_dim" if self.head_dim else "type",
                f"2-D RoPE rotates channel pairs on two axes, so the head width must be a "
                f"multiple of 4; it is {head_dim}",
            )


class RopeAttention(MultiHeadAttention):
    """Attention with 2-D rotary position embedding.

    :class:`MultiHeadAttention` whose queries and keys are rotated by their grid position.
    """

    def __init__(self, config: RopeAttentionConfig, ctx: BuildContext) -> None:
        super().__init__(ctx.dim, ctx.num_heads, config)
        if len(ctx.grid) != 2:
            raise ValueError(f"rope attention needs a 2-D token grid, got grid {ctx.grid}")
        self.rope = Rotary2d(
            self.head_dim,
            self.num_heads,
            ctx.grid,
            ctx.num_prefix_tokens,
            config.rope,
            config.theta,
            pairs=config.pairs,
            axis_order=config.axis_order,
            ref_grid=config.ref_grid,
        )

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = super().split_heads(x)
        return self.rope(q), self.rope(k), v
