"""Built-in plugin: Tokens-to-Token ViT (Yuan et al., 2021, arXiv:2101.11986).

The T2T module (patchifier ``t2t``) builds tokens progressively: a *soft split* (overlapping
unfold) turns the image into tokens, a small one-head token layer re-structures them, they are
folded back into an image and split again; after the last split a linear layer projects to the
backbone width. The token layer is either a Performer (FAVOR+ linear attention; the paper's
default "T2T-ViT") or a softmax transformer ("T2T-ViT_t"); their parameters differ only by the
Performer's q/k/v biases (384 in all), so the published counts (21.5M / 39.2M / 64.1M) hold for
either and the presets use the paper's default, the Performer. The Performer's random features are
a fixed buffer, not a parameter.

The ``t2t-vit`` architecture is the ViT base with the T2T patchifier, MLP ratio 3 and no qkv bias
(the paper's deep-narrow backbone), and the paper's fixed 1D sinusoidal positions over
[cls, patches] (``posenc: {type: sincos, layout: sequence}``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import AttentionBase
from vitzoo.components.context import BuildContext
from vitzoo.components.favor import linear_attention, positive_random_features
from vitzoo.components.layers import to_pair
from vitzoo.components.patchify import Patchifier
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import NonNegativeInt, PositiveFloat, PositiveInt

TINY = {
    "image_size": 32,
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "t2t", "token_dim": 16},
}


class T2tConfig(ComponentConfig):
    """Tokens-to-token module: soft splits ``(kernel, stride, padding)`` with token layers between."""

    type: Literal["t2t"] = "t2t"
    splits: tuple[tuple[PositiveInt, PositiveInt, NonNegativeInt], ...] = (
        (7, 4, 2),
        (3, 2, 1),
        (3, 2, 1),
    )
    token_dim: PositiveInt = 64
    token_layer: Literal["performer", "transformer"] = "performer"
    #: Performer random features per token channel (m = kernel_ratio * token_dim).
    kernel_ratio: PositiveFloat = 0.5
    mlp_ratio: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _rules(self) -> T2tConfig:
        if not self.splits:
            raise SpecValueError("splits", "needs at least one (kernel, stride, padding) split")
        for i, (k, s, p) in enumerate(self.splits):
            if k < 1 or s < 1 or p < 0:
                raise SpecValueError(
                    ("splits", i), f"kernel/stride >= 1 and padding >= 0, got {(k, s, p)}"
                )
        if self.token_dim < 1:
            raise SpecValueError("token_dim", "must be >= 1")
        if self.token_layer == "performer" and int(self.token_dim * self.kernel_ratio) < 1:
            raise SpecValueError("kernel_ratio", "kernel_ratio * token_dim must be >= 1")
        return self

    def output_grid(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        grid = tuple(image_size)
        for k, s, p in self.splits:
            grid = tuple((g + 2 * p - k) // s + 1 for g in grid)
        return grid

    def check(self, image_size: Any = None, **_: Any) -> None:
        if image_size is not None:
            grid = self.output_grid(to_pair(image_size))
            if min(grid) < 1:
                raise SpecValueError(
                    "splits",
                    f"image {tuple(to_pair(image_size))} leaves an empty token grid {grid}",
                )


class TokenMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenSoftmaxAttention(AttentionBase):
    """One-head softmax attention from ``in_dim`` to ``out_dim`` channels, residual on ``v``.

    The input and output widths differ, so the residual connection goes through the values.
    Weights come from :meth:`AttentionBase.attend` (maps are recordable like any attention's).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(in_dim, out_dim * 3, bias=False)
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)  # (B, 1, N, out_dim) each
        out = self.attend(q, k, v, mask).squeeze(1)
        return v.squeeze(1) + self.proj(out)


class TokenPerformerAttention(nn.Module):
    """One-head FAVOR+ attention (positive random features), residual on ``v``.

    softmax(q k^T) is approximated by phi(q) phi(k)^T with phi(x) = exp(w x - |x|^2 / 2) / sqrt(m)
    and fixed orthogonal random projections ``w`` (a buffer: they are not trained), which makes
    the token layer linear in the number of tokens -- the point of the paper's default T2T.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_ratio: float) -> None:
        super().__init__()
        self.kqv = nn.Linear(in_dim, out_dim * 3)
        self.proj = nn.Linear(out_dim, out_dim)
        self.num_features = int(out_dim * kernel_ratio)
        w = torch.empty(self.num_features, out_dim)
        if not w.is_meta:
            nn.init.orthogonal_(w)
        self.register_buffer("random_features", w * math.sqrt(self.num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("the performer token layer does not take attention masks")
        k, q, v = self.kqv(x).chunk(3, dim=-1)
        kp = positive_random_features(k, self.random_features)  # (B, N, m)
        qp = positive_random_features(q, self.random_features)
        return v + self.proj(linear_attention(qp, kp, v))


class TokenLayer(nn.Module):
    """T2T token transformer: x = attn(norm1(x)) (in -> out width); x = x + mlp(norm2(x))."""

    def __init__(self, in_dim: int, config: T2tConfig) -> None:
        super().__init__()
        out_dim = config.token_dim
        self.norm1 = nn.LayerNorm(in_dim)
        if config.token_layer == "performer":
            self.attn: nn.Module = TokenPerformerAttention(in_dim, out_dim, config.kernel_ratio)
        else:
            self.attn = TokenSoftmaxAttention(in_dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = TokenMlp(out_dim, int(out_dim * config.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class T2tTokenizer(Patchifier):
    """Soft split -> token layer -> re-structurize, repeated; then project to the model width."""

    def __init__(self, config: T2tConfig, in_chans: int, dim: int) -> None:
        super().__init__()
        self.config = config
        widths = [in_chans] + [config.token_dim] * (len(config.splits) - 1)
        self.token_layers = nn.ModuleList(
            TokenLayer(c * k * k, config)
            for c, (k, _, _) in zip(widths[:-1], config.splits[:-1], strict=True)
        )
        k_last = config.splits[-1][0]
        self.proj = nn.Linear(widths[-1] * k_last * k_last, dim)

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return self.config.output_grid(tuple(image_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 4:
            raise ValueError(f"t2t expects images (B, C, H, W), got shape {tuple(x.shape)}")
        grid: tuple[int, ...] = tuple(x.shape[-2:])
        tokens = x
        for i, (k, s, p) in enumerate(self.config.splits):
            grid = tuple((g + 2 * p - k) // s + 1 for g in grid)
            tokens = F.unfold(tokens, kernel_size=k, stride=s, padding=p).transpose(1, 2)
            if i < len(self.token_layers):
                tokens = self.token_layers[i](tokens)
                tokens = tokens.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        return self.proj(tokens), grid


def build_t2t(config: T2tConfig, ctx: BuildContext) -> T2tTokenizer:
    """Tokens-to-token module (T2T-ViT)."""
    return T2tTokenizer(config, ctx.in_chans, ctx.dim)


class T2tVitConfig(VitConfig):
    """T2T-ViT: T2T tokens into a deep-narrow ViT backbone (defaults: T2T-ViT-14)."""

    type: Literal["t2t-vit"] = "t2t-vit"
    dim: PositiveInt = 384
    depth: PositiveInt = 14
    num_heads: PositiveInt = 6
    patch: ComponentSpec("patchifier") = component_default(type="t2t")
    posenc: ComponentSpec("posenc") = component_default(type="sincos", layout="sequence")
    attention: ComponentSpec("attention") = component_default(type="mhsa", qkv_bias=False)
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=3.0)


@hookimpl
def register_patchifiers(register: Any) -> None:
    register(
        "t2t",
        build_t2t,
        T2tConfig,
        tags={"image"},
        example={"config": {"token_dim": 16}, "model": {}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register("t2t-vit", VisionTransformer, T2tVitConfig, tags={"image", "tokens"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "t2t")
