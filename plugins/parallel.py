"""Built-in plugin: Parallel ViT (Touvron et al. 2022, "Three things everyone should know about
Vision Transformers", arXiv:2203.09795).

The mechanism is one block: ``branches`` attention branches run side by side on the same input and
their outputs are summed into the residual, then the same for ``branches`` MLP branches. Each branch
is whatever attention / MLP the host model names, so any registered attention can be parallelised.
``parallel-vit`` is the ViT base with this block as its default.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.layers import maybe_drop_path, maybe_layer_scale
from vitzoo.components.norms import NormKind, make_norm
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import PositiveFloat, PositiveInt
from vitzoo.registration_examples import TINY_VIT

TINY = TINY_VIT


class ParallelBlockConfig(ComponentConfig):
    """x + sum_i attn_i(norm_i(x)); then x + sum_i mlp_i(norm_i(x)) (pre-norm, one norm per branch)."""

    type: Literal["parallel"] = "parallel"
    branches: PositiveInt = 2
    layer_scale: PositiveFloat | None = None
    norm_eps: PositiveFloat = 1e-6
    norm: NormKind = "layernorm"

    def check(self, **_: Any) -> None:
        if self.branches < 1:
            raise SpecValueError("branches", f"must be >= 1, got {self.branches}")


class _Branch(nn.Module):
    """One pre-norm residual branch: layer_scale(fn(norm(x)))."""

    def __init__(self, dim: int, fn: nn.Module, config: ParallelBlockConfig) -> None:
        super().__init__()
        self.norm = make_norm(config.norm, dim, config.norm_eps)
        self.fn = fn
        self.ls = maybe_layer_scale(dim, config.layer_scale)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.ls(self.fn(self.norm(x), **kwargs))


class ParallelBlock(nn.Module):
    """Parallel attention / MLP branches (Touvron et al. 2022).

    Wider, shallower blocks: N attention branches then N MLP branches, each summed.
    """

    def __init__(self, config: ParallelBlockConfig, ctx: BuildContext) -> None:
        super().__init__()
        dim = ctx.dim
        self.attn_branches = nn.ModuleList(
            _Branch(dim, ctx.build("attention", ctx.attention), config)
            for _ in range(config.branches)
        )
        self.mlp_branches = nn.ModuleList(
            _Branch(dim, ctx.build("mlp", ctx.mlp), config) for _ in range(config.branches)
        )
        self.drop_path = maybe_drop_path(ctx.drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(sum(b(x, mask=mask) for b in self.attn_branches))
        return x + self.drop_path(sum(b(x) for b in self.mlp_branches))


class ParallelVitConfig(VitConfig):
    """ViT whose blocks run ``block.branches`` attention and MLP branches in parallel."""

    type: Literal["parallel-vit"] = "parallel-vit"
    block: ComponentSpec("block") = component_default(type="parallel", branches=2)


@hookimpl
def register_blocks(register: Any) -> None:
    register(
        "parallel",
        ParallelBlock,
        ParallelBlockConfig,
        tags={"mask"},
        example={"config": {"branches": 2}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "parallel-vit", VisionTransformer, ParallelVitConfig, tags={"image", "tokens"}, example=TINY
    )
