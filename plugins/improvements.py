"""Built-in plugin: transformer improvements any ViT can take (vit-pytorch's "combining with other
transformer improvements").

* ``swiglu`` / ``geglu`` MLPs -- gated linear units (Shazeer, 2020, "GLU Variants Improve
  Transformer", arXiv:2002.05202): ``fc2(act(x W) * (x V))``. The hidden width defaults to
  ``8/3 * dim`` (the paper's 2/3 of the 4x MLP), so parameters match the plain MLP.
* ``rope`` attention -- multi-head attention with 2-D rotary position embedding on queries and
  keys (Heo et al., ECCV 2024, arXiv:2403.13298; axial or RoPE-Mixed), see
  :mod:`vitzoo.components.rope`. Use it with ``posenc: {type: none}`` for RoPE-only models, or
  beside learned positions as the paper's "+APE" variants do.

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
from vitzoo.components.rope import RopeKind, Rotary2d
from vitzoo.config import PositiveFloat, PositiveInt, Rate

GATES = {"swiglu": F.silu, "geglu": F.gelu}


class GatedMlpConfig(ComponentConfig):
    """Gated MLP: fc2(act(x W) * (x V)); hidden width = ratio * dim."""

    type: Literal["swiglu", "geglu"]
    ratio: PositiveFloat = 8 / 3
    hidden_dim: PositiveInt | None = None
    dropout: Rate = 0.0
    bias: bool = True


class SwigluConfig(GatedMlpConfig):
    """SwiGLU MLP (SiLU gate)."""

    type: Literal["swiglu"] = "swiglu"


class GegluConfig(GatedMlpConfig):
    """GEGLU MLP (GELU gate)."""

    type: Literal["geglu"] = "geglu"


class GatedMlp(nn.Module):
    """Both input projections in one matmul (``fc1`` is 2x hidden wide), split, gate, project."""

    def __init__(self, dim: int, config: GatedMlpConfig) -> None:
        super().__init__()
        hidden = config.hidden_dim or max(1, int(dim * config.ratio))
        self.gate = GATES[config.type]
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(hidden, dim, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated, linear = self.fc1(x).chunk(2, dim=-1)
        return self.drop(self.fc2(self.drop(self.gate(gated) * linear)))


def build_gated_mlp(config: GatedMlpConfig, ctx: BuildContext) -> GatedMlp:
    """Gated linear unit MLP (SwiGLU / GEGLU)."""
    return GatedMlp(ctx.dim, config)


class RopeAttentionConfig(MhsaConfig):
    """Multi-head attention with 2-D rotary positions on q and k (axial or RoPE-Mixed)."""

    type: Literal["rope"] = "rope"  # type: ignore[assignment]
    rope: RopeKind = "axial"
    #: Frequency base; null takes the paper's value (100 axial, 10 mixed).
    theta: PositiveFloat | None = None

    def check(self, dim: int | None = None, num_heads: int | None = None, **_: Any) -> None:
        if self.theta is not None and not self.theta > 1.0:
            raise SpecValueError("theta", f"must be > 1, got {self.theta}")
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
        example={"config": {"rope": "mixed"}, "model": {"posenc": {"type": "none"}}},
    )
