"""Small building blocks shared by every variant (timm's ``layers`` in spirit)."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample during training."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class LayerScale(nn.Module):
    """Per-channel learned residual scaling (CaiT), initialised small to ease deep training."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def maybe_layer_scale(dim: int, init_value: float | None) -> nn.Module:
    return nn.Identity() if init_value is None else LayerScale(dim, init_value)


def maybe_drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()


def init_vit_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) linear weights, zero biases, unit norms (the ViT/DeiT recipe)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        if module.bias is not None:  # a bias-free LayerNorm has none
            nn.init.zeros_(module.bias)


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``max_rate`` over ``depth`` blocks.

    Plain Python on purpose: models must build on the meta device (no tensor data at build time).
    """
    if depth <= 1:
        return [0.0] * depth
    return [max_rate * i / (depth - 1) for i in range(depth)]


def to_pair(value: int | tuple[int, ...] | list[int], n: int = 2) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    return tuple(value)
