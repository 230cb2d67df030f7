"""Channel-mixing MLPs: (B, N, D) -> (B, N, D)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.config import ComponentConfig, PositiveFloat, PositiveInt, Rate


class GeluTanh(nn.GELU):
    """GELU with the tanh approximation: TensorFlow's / JAX's default ``gelu`` (MaxViT's released
    weights, big_vision), so ported weights need it to compute the same function."""

    def __init__(self) -> None:
        super().__init__(approximate="tanh")


class QuickGelu(nn.Module):
    """``x * sigmoid(1.702 x)``: the sigmoid approximation of GELU that OpenAI's CLIP was trained
    with (Radford et al., 2021; also ``quick_gelu`` in transformers and timm). Its released
    weights, and OpenCLIP's ``-quickgelu`` models, only compute their function with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "gelu-tanh": GeluTanh,
    "quick-gelu": QuickGelu,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
}


#: The activations a spec may name (the keys of :data:`ACTIVATIONS`).
Activation = Literal["gelu", "gelu-tanh", "quick-gelu", "relu", "silu", "hardswish"]


class MlpConfig(ComponentConfig):
    """Two linear layers with an activation between (hidden width = ratio * dim)."""

    type: Literal["mlp"] = "mlp"
    ratio: PositiveFloat = 4.0
    hidden_dim: PositiveInt | None = None
    activation: Activation = "gelu"
    dropout: Rate = 0.0
    bias: bool = True


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, config: MlpConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=config.bias)
        self.act = ACTIVATIONS[config.activation]()
        self.drop1 = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(hidden, dim, bias=config.bias)
        self.drop2 = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def mlp_hidden_dim(config: MlpConfig, dim: int) -> int:
    return config.hidden_dim or int(dim * config.ratio)


def build_mlp(config: MlpConfig, ctx: BuildContext) -> Mlp:
    """Feed-forward MLP."""
    return Mlp(ctx.dim, mlp_hidden_dim(config, ctx.dim), config)
