"""Transformer blocks: a residual attention branch and a residual MLP branch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import model_validator
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.layers import maybe_drop_path, maybe_layer_scale
from vitzoo.components.norms import NormKind, make_norm
from vitzoo.config import ComponentConfig, PositiveFloat, SpecValueError


class PreNormBlockConfig(ComponentConfig):
    """x + attn(norm(x)); x + mlp(norm(x)), with optional LayerScale and drop-path."""

    type: Literal["pre-norm"] = "pre-norm"
    layer_scale: PositiveFloat | None = None
    norm_eps: PositiveFloat = 1e-6
    #: LayerNorm (ViT) or RMSNorm before each branch.
    norm: NormKind = "layernorm"
    #: Where each branch's norm sits: ``pre`` (x + f(norm(x)), ViT) or ``res-post``
    #: (x + norm(f(x)), Swin V2's residual post-norm, Liu et al. 2022, Sec. 3.1: the branch
    #: output is normalised before it joins the residual, so activations do not pile up with
    #: depth in large models). The module names (norm1, attn, norm2, mlp) are the same.
    norm_position: Literal["pre", "res-post"] = "pre"

    #: Whether this config's block runs :meth:`PreNormBlock.forward`, where ``norm_position``
    #: acts. Not inherited: a subclass whose block has its own forward (DeepViT's scaled
    #: branches) opts in explicitly, so ``res-post`` is refused rather than silently ignored.
    honours_norm_position: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.honours_norm_position = bool(cls.__dict__.get("honours_norm_position", False))

    @model_validator(mode="after")
    def _norm_position_honoured(self) -> PreNormBlockConfig:
        if self.norm_position != "pre" and not type(self).honours_norm_position:
            raise SpecValueError(
                "norm_position",
                f"the {self.type} block places its norms itself; allowed here: pre",
            )
        return self


class PreNormBlock(nn.Module):
    """Pre-norm transformer block (or, with ``norm_position: res-post``, Swin V2's residual
    post-norm block).

    The standard ViT block. Drop-path rate comes from the architecture's per-layer schedule."""

    def __init__(self, config: PreNormBlockConfig, ctx: BuildContext) -> None:
        super().__init__()
        dim = ctx.dim
        self.norm1 = make_norm(config.norm, dim, config.norm_eps)
        self.attn = ctx.build("attention", ctx.attention)
        self.ls1 = maybe_layer_scale(dim, config.layer_scale)
        self.norm2 = make_norm(config.norm, dim, config.norm_eps)
        self.mlp = ctx.build("mlp", ctx.mlp)
        self.ls2 = maybe_layer_scale(dim, config.layer_scale)
        self.drop_path = maybe_drop_path(ctx.drop_path)
        self.post_norm = config.norm_position == "res-post"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.post_norm:
            x = x + self.drop_path(self.ls1(self.norm1(self.attn(x, mask=mask))))
            return x + self.drop_path(self.ls2(self.norm2(self.mlp(x))))
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), mask=mask)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


def block_stack(
    ctx: BuildContext,
    spec: Any,
    rates: Sequence[float],
    *,
    grid: tuple[int, ...],
    num_prefix_tokens: int,
    attention: Any | Callable[[int], Any],
    mlp: Any,
    first_layer: int = 0,
) -> nn.ModuleList:
    """``len(rates)`` blocks built from the ``spec`` block, block ``i`` at drop-path ``rates[i]``.

    Each block learns its place in the model from its context: it is layer ``first_layer + i``,
    so a stack that continues another one (CaiT's
    class-attention blocks after the patch blocks, a hierarchical model's later stages) numbers
    on instead of restarting at 0. The token mixer and channel mixer come from the ``attention``
    / ``mlp`` specs; ``attention`` may be a function of the block's index in the stack instead
    (stages that alternate two attentions).
    """
    return nn.ModuleList(
        ctx.build(
            "block",
            spec,
            grid=grid,
            num_prefix_tokens=num_prefix_tokens,
            layer_index=first_layer + i,
            drop_path=rate,
            attention=attention(i) if callable(attention) else attention,
            mlp=mlp,
        )
        for i, rate in enumerate(rates)
    )
