"""Built-in plugin: linear-complexity attention (Nyströmformer, Xiong et al. 2021, arXiv:2102.03902).

``nystrom`` approximates softmax(Q K^T / sqrt(d)) V with ``landmarks`` segment-mean landmarks::

    softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V

so time and memory grow linearly in the token count. The pseudo-inverse uses the paper's iterative
Moore-Penrose scheme, and an optional depthwise convolution over the values adds the paper's skip
connection. It reuses :class:`MultiHeadAttention`'s projections; only the weight computation
differs. It is registered as an attention component, so any model with an ``attention`` field can
use it (``benchmarks/attention_scaling.py`` compares it with SDPA softmax attention).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo import SpecValueError, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.config import PositiveInt


class NystromConfig(MhsaConfig):
    """Nyström attention: O(N * landmarks) instead of O(N^2)."""

    type: Literal["nystrom"] = "nystrom"  # type: ignore[assignment]
    landmarks: PositiveInt = 64
    pinv_iterations: PositiveInt = 6
    residual_conv_kernel: PositiveInt | None = 33

    def check(self, **_: Any) -> None:
        if self.landmarks < 1:
            raise SpecValueError("landmarks", f"must be >= 1, got {self.landmarks}")
        if self.pinv_iterations < 1:
            raise SpecValueError("pinv_iterations", f"must be >= 1, got {self.pinv_iterations}")
        kernel = self.residual_conv_kernel
        if kernel is not None and (kernel < 1 or kernel % 2 == 0):
            raise SpecValueError(
                "residual_conv_kernel", f"must be an odd positive size or null, got {kernel}"
            )


def iterative_pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of (..., m, m) softmax matrices (Nyströmformer eq. 16)."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    abs_a = a.abs()
    denom = abs_a.sum(dim=-1).amax(dim=-1) * abs_a.sum(dim=-2).amax(dim=-1)
    z = a.transpose(-1, -2) / denom.amax()
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class NystromAttention(MultiHeadAttention):
    """Multi-head attention with the Nyström approximation of the softmax matrix.

    ``mask`` may be a (B, N) key-padding mask: masked tokens are excluded from the landmarks and
    from every key set. With ``store_attention`` on, the (approximate) N x N map is materialised so
    attention-map tools work as for any other attention.
    """

    def __init__(self, dim: int, num_heads: int, config: NystromConfig) -> None:
        super().__init__(dim, num_heads, config)
        self.landmarks = config.landmarks
        self.pinv_iterations = config.pinv_iterations
        kernel = config.residual_conv_kernel
        self.res_conv = (
            nn.Conv2d(
                num_heads,
                num_heads,
                (kernel, 1),
                padding=(kernel // 2, 0),
                groups=num_heads,
                bias=False,
            )
            if kernel
            else None
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None and (mask.ndim != 2 or mask.dtype != torch.bool):
            raise ValueError("nystrom attention takes a boolean (B, N) key-padding mask")
        q, k, v = self.split_heads(x)
        n = q.shape[-2]
        m = min(self.landmarks, n)
        pad = (-n) % m
        keep = (
            torch.ones(q.shape[0], n, dtype=torch.bool, device=q.device) if mask is None else mask
        )
        keep = F.pad(keep, (pad, 0), value=False)  # pad at the front, as the paper's code does
        q, k, v = (F.pad(t, (0, 0, pad, 0)) for t in (q, k, v))
        weight = keep[:, None, :, None].to(q.dtype)
        q, k, v = q * weight, k * weight, v * weight
        q = q * self.head_dim**-0.5

        # Landmarks: means of consecutive segments of real tokens.
        b, h, length, d = q.shape
        counts = weight.reshape(b, 1, m, length // m).sum(dim=-1).clamp(min=1.0)
        q_land = q.reshape(b, h, m, length // m, d).sum(dim=-2) / counts[..., None]
        k_land = k.reshape(b, h, m, length // m, d).sum(dim=-2) / counts[..., None]

        key_ok = keep[:, None, None, :]
        low = torch.finfo(q.dtype).min
        kernel1 = (q @ k_land.transpose(-1, -2)).softmax(dim=-1)
        kernel2 = (q_land @ k_land.transpose(-1, -2)).softmax(dim=-1)
        kernel3 = (q_land @ k.transpose(-1, -2)).masked_fill(~key_ok, low).softmax(dim=-1)
        left = kernel1 @ iterative_pinv(kernel2, self.pinv_iterations)
        out = left @ (kernel3 @ v)
        if self.store_attention:
            self.attention_map = (left @ kernel3)[:, :, pad:, pad:].detach()
        if self.res_conv is not None:
            out = out + self.res_conv(v)
        return self.merge_heads(out[:, :, pad:])


def build_nystrom(config: NystromConfig, ctx: BuildContext) -> NystromAttention:
    """Nyström (linear-complexity) attention."""
    return NystromAttention(ctx.dim, ctx.num_heads, config)


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "nystrom",
        build_nystrom,
        NystromConfig,
        tags={"mask", "linear-complexity"},
        example={"config": {"landmarks": 4, "residual_conv_kernel": 3}},
    )
