"""Built-in plugin: transformer improvements any ViT can take (vit-pytorch's "combining with other
transformer improvements").

* ``swiglu`` / ``geglu`` MLPs -- gated linear units, now core components
  (:mod:`vitzoo.components.mlp`: released families -- DINOv2-g, AIMv2 -- use them, and built-in
  plugins must not depend on each other); the names stay importable from here.
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

from vitzoo import SpecValueError, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.mlp import (  # noqa: F401 - re-exported: they lived here before
    GatedMlp,
    GatedMlpConfig,
    GegluConfig,
    SwigluConfig,
    build_gated_mlp,
)
from vitzoo.components.rope import RopeKind, Rotary2d
from vitzoo.config import PositiveFloat


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
def register_attention(register: Any) -> None:
    # The rotation is defined on the patch grid, so the host keeps it fixed (no token dropping).
    register(
        "rope",
        RopeAttention,
        RopeAttentionConfig,
        tags={"image", "mask", "sdpa"},
        example={"config": {"rope": "mixed"}, "model": {"posenc": {"type": "none"}}},
    )
