"""Built-in plugin: linear-complexity attention, three ways (vit-pytorch's "efficient attention").

* ``nystrom`` -- Nyströmformer (Xiong et al., AAAI 2021, arXiv:2102.03902), below;
* ``performer`` -- FAVOR+ positive random features (Choromanski et al., ICLR 2021,
  arXiv:2009.14794), the maths shared with T2T's token layer in :mod:`vitzoo.components.favor`;
* ``linformer`` -- low-rank keys/values (Wang et al., 2020, arXiv:2006.04768): learned
  ``(k, N)`` projections shorten the key/value sequence to ``k``, so it needs the fixed token
  count the host was built for.

Nyströmformer:

``nystrom`` approximates softmax(Q K^T / sqrt(d)) V with ``landmarks`` segment-mean landmarks::

    softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V

so time and memory grow linearly in the token count. The pseudo-inverse uses the paper's iterative
Moore-Penrose scheme, and an optional depthwise convolution over the values adds the paper's skip
connection. It reuses :class:`MultiHeadAttention`'s projections; only the weight computation
differs. It is registered as an attention component, so any model with an ``attention`` field can
use it (``benchmarks/attention_scaling.py`` compares it with SDPA softmax attention).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo import SpecValueError, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.favor import (
    gaussian_orthogonal_features,
    linear_attention,
    positive_random_features,
)
from vitzoo.components.grid import refuse_dynamic_grid
from vitzoo.components.resample import resize_map
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
    z = a.transpose(-1, -2) / denom.max()
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


class PerformerConfig(MhsaConfig):
    """Performer (FAVOR+): softmax attention approximated with positive orthogonal random features."""

    type: Literal["performer"] = "performer"  # type: ignore[assignment]
    #: Random features per head (m); null takes the paper's ``d log d`` for head width ``d``.
    num_features: PositiveInt | None = None

    def check(self, **_: Any) -> None:
        if self.num_features is not None and self.num_features < 1:
            raise SpecValueError("num_features", f"must be >= 1, got {self.num_features}")


class PerformerAttention(MultiHeadAttention):
    """Multi-head FAVOR+ attention, O(N m d) in time and memory.

    The random projection is a fixed buffer drawn at construction (saved with the weights, so a
    checkpoint reproduces the model exactly); the paper's periodic redrawing is left out for that
    reason. Keys masked by a (B, N) key-padding mask get zero features, so they add nothing to
    numerator or normaliser. With ``store_attention`` the implied N x N map is materialised.
    """

    def __init__(self, dim: int, num_heads: int, config: PerformerConfig) -> None:
        super().__init__(dim, num_heads, config)
        d = self.head_dim
        m = config.num_features or max(1, round(d * math.log(max(d, 2))))
        self.register_buffer("projection", gaussian_orthogonal_features(m, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None and (mask.ndim != 2 or mask.dtype != torch.bool):
            raise ValueError("performer attention takes a boolean (B, N) key-padding mask")
        q, k, v = self.split_heads(x)
        scale = self.head_dim**-0.25  # exp(q.k / sqrt(d)) = exp((q d^-1/4).(k d^-1/4))
        qp = positive_random_features(q * scale, self.projection, stabilise=True)
        kp = positive_random_features(k * scale, self.projection)
        if mask is not None:
            kp = kp * mask[:, None, :, None].to(kp.dtype)
        # One factor for all keys of a head cancels in the normalisation and keeps values in range.
        kp = kp / kp.detach().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
        if self.store_attention:
            weights = qp @ kp.transpose(-2, -1)
            self.attention_map = (weights / weights.sum(-1, keepdim=True)).detach()
        return self.merge_heads(linear_attention(qp, kp, v))


def build_performer(config: PerformerConfig, ctx: BuildContext) -> PerformerAttention:
    """Performer (FAVOR+) linear attention."""
    return PerformerAttention(ctx.dim, ctx.num_heads, config)


class LinformerConfig(MhsaConfig):
    """Linformer: keys and values projected along the sequence to ``proj_len`` tokens."""

    type: Literal["linformer"] = "linformer"  # type: ignore[assignment]
    #: Projected sequence length k (the paper uses 64-256).
    proj_len: PositiveInt = 64
    #: One projection for keys and values (the paper's "key-value sharing").
    share_kv: bool = False

    def check(self, dynamic_img_size: bool = False, **_: Any) -> None:
        if self.proj_len < 1:
            raise SpecValueError("proj_len", f"must be >= 1, got {self.proj_len}")
        refuse_dynamic_grid("linformer (projections over a fixed token count)", dynamic_img_size)


class LinformerAttention(MultiHeadAttention):
    """Linformer low-rank attention.

    Softmax attention of N queries over k projected keys/values (headwise-shared projections).

    The projections are (k, N) matrices, so the sequence length is fixed by the host's token grid
    (prefix tokens + grid cells). Masked keys are zeroed before the projection, so they do not
    reach any output.
    """

    def __init__(self, config: LinformerConfig, ctx: BuildContext) -> None:
        super().__init__(ctx.dim, ctx.num_heads, config)
        if not ctx.grid:
            raise ValueError("linformer attention needs a host that tells it its token grid")
        self.seq_len = ctx.num_prefix_tokens + math.prod(ctx.grid)
        self.grid, self.num_prefix = tuple(ctx.grid), ctx.num_prefix_tokens
        bound = config.proj_len**-0.5
        self.proj_k = nn.Parameter(
            torch.empty(config.proj_len, self.seq_len).uniform_(-bound, bound)
        )
        self.proj_v = (
            None
            if config.share_kv
            else nn.Parameter(torch.empty(config.proj_len, self.seq_len).uniform_(-bound, bound))
        )

    def resample_tensor(
        self, name: str, tensor: torch.Tensor, old: LinformerAttention
    ) -> torch.Tensor | None:
        """``set_input_size``: a projection's grid columns resampled as a (k, h, w) map and
        scaled by old/new cell count, so it still sums over the image as before; prefix
        columns kept."""
        if name not in ("proj_k", "proj_v") or len(self.grid) != 2:
            return None
        prefix, cells = tensor[:, : old.num_prefix], tensor[:, old.num_prefix :]
        cells = resize_map(cells.reshape(1, -1, *old.grid), self.grid).flatten(1)
        scale = math.prod(old.grid) / math.prod(self.grid)
        return torch.cat([prefix, cells.reshape(tensor.shape[0], -1) * scale], dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] != self.seq_len:
            raise ValueError(
                f"linformer attention was built for {self.seq_len} tokens, got {x.shape[1]}: "
                "its projections have a fixed sequence length"
            )
        if mask is not None and (mask.ndim != 2 or mask.dtype != torch.bool):
            raise ValueError("linformer attention takes a boolean (B, N) key-padding mask")
        q, k, v = self.split_heads(x)
        if mask is not None:
            keep = mask[:, None, :, None].to(k.dtype)
            k, v = k * keep, v * keep
        proj_v = self.proj_k if self.proj_v is None else self.proj_v
        k = torch.einsum("kn,bhnd->bhkd", self.proj_k, k)
        v = torch.einsum("kn,bhnd->bhkd", proj_v, v)
        return self.merge_heads(self.attend(q, k, v))


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "performer",
        build_performer,
        PerformerConfig,
        tags={"mask", "linear-complexity"},
        example={"config": {"num_features": 16}},
    )
    # Fixed token count: not for hosts that drop or merge tokens.
    register(
        "linformer",
        LinformerAttention,
        LinformerConfig,
        tags={"mask", "linear-complexity", "fixed-length"},
        example={"config": {"proj_len": 8}},
    )
    register(
        "nystrom",
        build_nystrom,
        NystromConfig,
        tags={"mask", "linear-complexity"},
        example={"config": {"landmarks": 4, "residual_conv_kernel": 3}},
    )
