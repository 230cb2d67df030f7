"""Built-in plugin: transformer improvements any ViT can take (vit-pytorch's "combining with other
transformer improvements").

* ``swiglu`` / ``geglu`` MLPs -- gated linear units (Shazeer, 2020, "GLU Variants Improve
  Transformer", arXiv:2002.05202): ``fc2(act(x W) * (x V))``. The hidden width defaults to
  ``8/3 * dim`` (the paper's 2/3 of the 4x MLP), so parameters match the plain MLP. ``norm``
  adds a norm over the hidden units before ``fc2`` (EVA-02's sub-LN, Fang et al., 2023).
  Both input projections live in one ``fc1`` (gate rows first); checkpoints that keep them
  apart (timm's ``fc1_g`` / ``fc1_x``, EVA's ``w1`` / ``w2``) are joined by converter rules.
* ``rope`` attention -- multi-head attention with 2-D rotary position embedding on queries and
  keys (Heo et al., ECCV 2024, arXiv:2403.13298; axial or RoPE-Mixed), see
  :mod:`vitzoo.components.rope`. Use it with ``posenc: {type: none}`` for RoPE-only models, or
  beside learned positions as the paper's "+APE" variants (and EVA-02) do. ``pairs``,
  ``axis_order`` and ``ref_grid`` give EVA-02's layout of the same rotation.

RMSNorm is an option wherever a norm is chosen (``norm: rmsnorm`` on blocks and the ViT base,
``qk_norm_type: rmsnorm`` on attention), so it needs no registration. ``examples/modern-vit.yaml``
combines them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo import ComponentConfig, SpecValueError, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.norms import NormKind, make_norm
from vitzoo.components.rope import RopeAxisOrder, RopeKind, RopePairs, Rotary2d
from vitzoo.config import PositiveFloat, PositiveInt, Rate

GATES = {"swiglu": F.silu, "geglu": F.gelu}


class GatedMlpConfig(ComponentConfig):
    """Gated MLP: fc2(act(x W) * (x V)); hidden width = ratio * dim."""

    type: Literal["swiglu", "geglu"]
    ratio: PositiveFloat = 8 / 3
    hidden_dim: PositiveInt | None = None
    dropout: Rate = 0.0
    bias: bool = True
    #: A norm over the gated hidden units before ``fc2`` (EVA-02's sub-LN); null: none.
    norm: NormKind | None = None
    norm_eps: PositiveFloat = 1e-6


class SwigluConfig(GatedMlpConfig):
    """SwiGLU MLP (SiLU gate)."""

    type: Literal["swiglu"] = "swiglu"


class GegluConfig(GatedMlpConfig):
    """GEGLU MLP (GELU gate)."""

    type: Literal["geglu"] = "geglu"


class GatedMlp(nn.Module):
    """Both input projections in one matmul (``fc1`` is 2x hidden wide: the gate's rows, then the
    linear half's), split, gate, optionally normalise, project."""

    def __init__(self, dim: int, config: GatedMlpConfig) -> None:
        super().__init__()
        hidden = config.hidden_dim or max(1, int(dim * config.ratio))
        self.gate = GATES[config.type]
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)
        self.norm = (
            nn.Identity()
            if config.norm is None
            else make_norm(config.norm, hidden, config.norm_eps)
        )
        self.fc2 = nn.Linear(hidden, dim, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated, linear = self.fc1(x).chunk(2, dim=-1)
        return self.drop(self.fc2(self.norm(self.drop(self.gate(gated) * linear))))


def build_gated_mlp(config: GatedMlpConfig, ctx: BuildContext) -> GatedMlp:
    """Gated linear unit MLP (SwiGLU / GEGLU)."""
    return GatedMlp(ctx.dim, config)


class RopeAttentionConfig(MhsaConfig):
    """Multi-head attention with 2-D rotary positions on q and k (axial or RoPE-Mixed)."""

    type: Literal["rope"] = "rope"  # type: ignore[assignment]
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


@hookimpl
def register_mlps(register: Any) -> None:
    register("swiglu", build_gated_mlp, SwigluConfig)
    register("geglu", build_gated_mlp, GegluConfig)


@hookimpl
def register_attention(register: Any) -> None:
    # The rotation is defined on the patch grid, so the host keeps it fixed (no token dropping).
    register(
        "rope",
        RopeAttention,
        RopeAttentionConfig,
        tags={"image", "mask", "sdpa"},
        needs={"image", "grid-2d", "fixed-grid"},
        example={"config": {"rope": "mixed"}, "model": {"posenc": {"type": "none"}}},
    )
