"""Built-in plugin: LeViT (Graham et al., ICCV 2021, arXiv:2104.01136).

LeViT is a convnet-shaped transformer for fast inference: a 4-conv stride-16 stem, three stages
of attention + MLP residual blocks on a shrinking grid, "shrinking attention" (queries subsampled
by 2) between stages, a learned per-head **attention bias** indexed by the absolute offset between
positions instead of positional embeddings, Hardswish everywhere, and every linear layer followed
by BatchNorm (:class:`LinearBN`) so that inference folds them into plain biased layers
(:meth:`Levit.fuse`). Classification averages the last map and feeds two BatchNorm + linear
heads (class and distillation), each with its own BatchNorm as in the official code, timm and
HF (the ``norm: batchnorm`` option of the head): a (cls, dist) pair in training, their mean in
eval.

Attention weights go through ``AttentionBase.attend`` with the bias, so SDPA and
``record_attention`` work as for every other variant.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.levit_weights import CONVERTERS

from vitzoo import component_default, hookimpl
from vitzoo.components.attention import AttentionBase
from vitzoo.components.context import BuildContext
from vitzoo.components.conv import ConvNormAct, fuse_batchnorm, fuse_conv_bn
from vitzoo.components.hierarchical import (
    HierarchicalConfig,
    HierarchicalModel,
    check_multiples_of,
    conv_out,
    drop_path_schedule,
    map_to_tokens,
    tokens_to_map,
)
from vitzoo.components.inference_cache import InferenceCache
from vitzoo.components.layers import maybe_drop_path
from vitzoo.config import ComponentSpec, PositiveFloat, PositiveInt, SpecValueError


class LinearBN(nn.Module):
    """Linear (no bias) followed by BatchNorm1d over the channel axis of (B, N, C) tokens."""

    def __init__(self, in_dim: int, out_dim: int, bn_init: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.bn = nn.BatchNorm1d(out_dim)
        nn.init.constant_(self.bn.weight, bn_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(x).flatten(0, 1)).reshape(*x.shape[:-1], -1)

    def fuse(self) -> nn.Linear:
        fused = nn.Linear(self.linear.in_features, self.linear.out_features).to(
            self.linear.weight.device
        )
        w, b = fuse_conv_bn(self.linear.weight, None, self.bn)
        fused.weight.data.copy_(w)
        fused.bias.data.copy_(b)
        return fused


def attention_bias_index(
    q_grid: Sequence[int], k_grid: Sequence[int], stride: int
) -> tuple[int, torch.Tensor]:
    """Index (Nq, Nk) into a table of distinct |dy|, |dx| offsets; queries sit every ``stride``."""
    offsets: dict[tuple[int, int], int] = {}
    rows = []
    k_points = list(itertools.product(range(k_grid[0]), range(k_grid[1])))
    for qy, qx in itertools.product(range(q_grid[0]), range(q_grid[1])):
        row = []
        for ky, kx in k_points:
            off = (abs(qy * stride - ky), abs(qx * stride - kx))
            row.append(offsets.setdefault(off, len(offsets)))
        rows.append(row)
    return len(offsets), torch.tensor(rows, dtype=torch.long)


class LevitAttention(AttentionBase):
    """Multi-head attention with BN-linear projections and the LeViT attention bias.

    ``stride > 1`` is the shrinking attention between stages: queries come from every
    ``stride``-th position, keys/values from all of them, and the output width may change.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        *,
        key_dim: int,
        num_heads: int,
        attn_ratio: float,
        grid: Sequence[int],
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.stride = num_heads, key_dim, stride
        self.value_dim = int(attn_ratio * key_dim)
        self.grid = tuple(grid)
        self.q_grid = tuple(conv_out(s, 1, stride, 0) for s in grid)
        qk = key_dim * num_heads
        values = self.value_dim * num_heads
        if stride == 1:
            self.qkv = LinearBN(dim, 2 * qk + values)
        else:
            self.kv = LinearBN(dim, qk + values)
            self.q = LinearBN(dim, qk)
        # Residual attentions start as identity (zero BN gain); the shrinking one has no residual.
        proj_init = 0.0 if stride == 1 else 1.0
        self.proj = nn.Sequential(nn.Hardswish(), LinearBN(values, out_dim, bn_init=proj_init))
        num_offsets, index = attention_bias_index(self.q_grid, self.grid, stride)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, num_offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=False)
        self._bias_cache = InferenceCache()

    def train(self, mode: bool = True) -> LevitAttention:
        self._bias_cache.clear()  # also drops a bias cached before an edit through ``.data``
        return super().train(mode)

    def attention_bias(self) -> torch.Tensor:
        """(heads, Nq, Nk) bias gathered from the offset table; cached while autograd is off."""
        return self._bias_cache.get(
            lambda: self.attention_biases[:, self.attention_bias_idxs],
            self.attention_biases,
            self.attention_bias_idxs,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        h, kd, vd = self.num_heads, self.key_dim, self.value_dim
        if self.stride == 1:
            q, k, v = self.qkv(x).view(b, n, h, -1).split([kd, kd, vd], dim=3)
        else:
            k, v = self.kv(x).view(b, n, h, -1).split([kd, vd], dim=3)
            fmap = x.view(b, *self.grid, c)[:, :: self.stride, :: self.stride]
            q = self.q(fmap.reshape(b, -1, c)).view(b, -1, h, kd)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        bias = self.attention_bias().to(q.dtype)
        out = self.attend(q, k, v, mask, scale=kd**-0.5, bias=bias)
        return self.proj(out.transpose(1, 2).reshape(b, out.shape[2], -1))


class LevitMlp(nn.Sequential):
    """BN-linear expansion, Hardswish, BN-linear projection (BN initialised to zero)."""

    def __init__(self, dim: int, ratio: float) -> None:
        hidden = int(dim * ratio)
        super().__init__(LinearBN(dim, hidden), nn.Hardswish(), LinearBN(hidden, dim, bn_init=0.0))


class Residual(nn.Module):
    """x + drop_path(fn(x))."""

    def __init__(self, fn: nn.Module, drop_path: float) -> None:
        super().__init__()
        self.fn = fn
        self.drop_path = maybe_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.fn(x))


class LevitStage(nn.Module):
    """[shrinking attention + MLP] -> (attention, MLP) residual pairs; (B,C,H,W) in and out."""

    def __init__(self, down: nn.Module | None, blocks: nn.Sequential, grid: Sequence[int]) -> None:
        super().__init__()
        self.downsample = down
        self.blocks = blocks
        self.grid = tuple(grid)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = map_to_tokens(fmap)
        if self.downsample is not None:
            x = self.downsample(x)
        return tokens_to_map(self.blocks(x), self.grid)


class LevitConfig(HierarchicalConfig):
    """LeViT: conv stem, BN-linear attention with attention bias, shrinking attention, 2 heads."""

    type: Literal["levit"] = "levit"
    dims: list[PositiveInt] = [128, 256, 384]
    depths: list[PositiveInt] = [4, 4, 4]
    num_heads: list[PositiveInt] = [4, 8, 12]
    key_dim: PositiveInt = 16
    #: value width = attn_ratio * key_dim per head inside stages; mlp hidden = mlp_ratio * dim.
    attn_ratio: PositiveFloat = 2.0
    mlp_ratio: PositiveFloat = 2.0
    down_attn_ratio: PositiveFloat = 4.0
    down_mlp_ratio: PositiveFloat = 2.0
    #: One BatchNorm per classifier (class and distillation), as the released models have.
    head: ComponentSpec("head") = component_default(type="distillation", norm="batchnorm")
    head_norm: Literal["layernorm", "batchnorm", "none"] = "none"

    @model_validator(mode="after")
    def _rules(self) -> LevitConfig:
        self.check_stages(
            positive=dict(key_dim=self.key_dim), heads_divide=False, distillation=True
        )
        check_multiples_of(
            "dims",
            self.dims[:-1],
            self.key_dim,
            "key_dim",
            "shrinking attention uses dim // key_dim heads",
        )
        if min(self.image_hw) < 16:
            raise SpecValueError("image_size", "LeViT's stem has stride 16; allowed: >= 16")
        return self


class Levit(HierarchicalModel):
    """LeViT (attention bias, BN-fused linear layers, distillation head)."""

    def __init__(self, config: LevitConfig, ctx: BuildContext) -> None:
        super().__init__()
        dims = config.dims
        stem_widths = [dims[0] // 8, dims[0] // 4, dims[0] // 2, dims[0]]
        layers: list[nn.Module] = []
        width = config.in_chans
        for i, out in enumerate(stem_widths):
            last = i == len(stem_widths) - 1
            layers.append(ConvNormAct(width, out, 3, 2, activation="none" if last else "hardswish"))
            width = out
        self.stem = nn.Sequential(*layers)
        grid = tuple(config.image_hw)
        for _ in stem_widths:
            grid = tuple(conv_out(s, 3, 2, 1) for s in grid)

        rates = drop_path_schedule(config.drop_path_rate, config.depths)
        stages = []
        for i, dim in enumerate(dims):
            down = None
            if i > 0:
                prev = dims[i - 1]
                shrink = LevitAttention(
                    prev,
                    dim,
                    key_dim=config.key_dim,
                    num_heads=prev // config.key_dim,
                    attn_ratio=config.down_attn_ratio,
                    grid=grid,
                    stride=2,
                )
                grid = shrink.q_grid
                down = nn.Sequential(shrink, Residual(LevitMlp(dim, config.down_mlp_ratio), 0.0))
            blocks = []
            for rate in rates[i]:
                attn = LevitAttention(
                    dim,
                    dim,
                    key_dim=config.key_dim,
                    num_heads=config.num_heads[i],
                    attn_ratio=config.attn_ratio,
                    grid=grid,
                )
                blocks += [Residual(attn, rate), Residual(LevitMlp(dim, config.mlp_ratio), rate)]
            stages.append(LevitStage(down, nn.Sequential(*blocks), grid))
        self.stages = nn.ModuleList(stages)
        self.init_head(config, ctx, dims[-1])
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.no_grad()
    def fuse(self) -> Levit:
        """Fold every BatchNorm of the stem and stages into the preceding conv/linear (eval only).

        The eval output is unchanged; training afterwards is not supported (no BatchNorm left).
        """
        if self.training:
            raise RuntimeError("fuse() folds running statistics: call model.eval() first")
        fuse_batchnorm(self.stem)
        fuse_batchnorm(self.stages)
        return self


TINY: dict[str, Any] = {
    "image_size": 64,
    "dims": [32, 48],
    "depths": [1, 1],
    "num_heads": [2, 3],
    "key_dim": 8,
    "num_classes": 10,
}


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "levit",
        Levit,
        LevitConfig,
        tags={"image", "feature-maps", "distillation"},
        example=TINY,
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "levit")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
