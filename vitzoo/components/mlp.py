"""Channel-mixing MLPs: (B, N, D) -> (B, N, D).

* ``mlp`` -- two linear layers with an activation between (ViT);
* ``swiglu`` / ``geglu`` -- gated linear units (Shazeer, 2020, "GLU Variants Improve
  Transformer", arXiv:2002.05202): ``fc2(act(x W) * (x V))``. The hidden width defaults to
  ``8/3 * dim`` (the paper's 2/3 of the 4x MLP), so parameters match the plain MLP. ``norm``
  adds a norm over the hidden units before ``fc2`` (EVA-02's sub-LN, Fang et al., 2023).
  Both input projections live in one ``fc1`` (gate rows first); checkpoints that keep them
  apart (timm's ``fc1_g`` / ``fc1_x``, EVA's ``w1`` / ``w2``, AIMv2's gate / value) are joined
  by converter rules; the packed layout is DINOv2's ``SwiGLUFFNFused`` and timm's
  ``SwiGLUPacked``. Registered by the core (not a plugin) because several families' released
  models build on them (EVA-02, DINOv2-g, AIMv2).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.norms import NormKind, make_norm
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


# -- gated linear units -------------------------------------------------------------------------
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
