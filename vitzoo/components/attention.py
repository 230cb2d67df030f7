"""Attention: ``forward(x (B, N, D), mask=None) -> (B, N, D)``.

:class:`AttentionBase` owns the one place where attention weights are computed. It calls the fused
``F.scaled_dot_product_attention`` kernel unless the variant needs the matrix itself (talking
heads, re-attention) or someone asked to see the maps (``store_attention = True``, set by
:func:`vitzoo.introspection.record_attention`); then it computes softmax explicitly, lets the
variant transform the weights, and keeps a detached copy in ``attention_map``. Variants therefore
expose their maps without a second implementation.

``mask`` is boolean, ``True`` where attention is allowed: either a key-padding mask (B, N) or a
full mask broadcastable to (B, heads, N, N); or a packed batch's
:class:`~vitzoo.components.packing.PackedMask`, which runs CUDA's variable-length kernel where it
can and is its dense block-diagonal mask everywhere else.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.norms import NormKind, PerHeadNorm, make_norm
from vitzoo.components.packing import PackedMask
from vitzoo.config import ComponentConfig, PositiveFloat, PositiveInt, Rate, SpecValueError


def as_attention_mask(mask: torch.Tensor | PackedMask | None) -> torch.Tensor | None:
    """Normalise a key-padding (B, N) or full boolean mask to a (B|1, 1|H, N|1, N) one (a packed
    batch's :class:`~vitzoo.components.packing.PackedMask`: its dense block-diagonal mask)."""
    if mask is None:
        return None
    if isinstance(mask, PackedMask):
        mask = mask.dense
    if mask.dtype != torch.bool:
        raise TypeError(f"attention masks are boolean (True = attend), got {mask.dtype}")
    if mask.ndim == 2:
        return mask[:, None, None, :]
    if mask.ndim == 3:
        return mask[:, None]
    return mask


def sdpa_falls_back_to_math(q: torch.Tensor, v: torch.Tensor) -> bool:
    """True where SDPA has no fused kernel for these shapes and would run its math reference.

    On CPU the only fused kernel needs equal query/key and value head widths (LeViT's values are
    wider than its keys). The math reference is slower than the explicit softmax path here: it
    guards every row against all-masked logits (extra ``all``/``where``/``isneginf`` passes over
    the (B, H, N, N) logits). CUDA's memory-efficient kernel handles unequal widths, so only CPU
    inputs are sent to the explicit path.
    """
    return q.device.type == "cpu" and q.shape[-1] != v.shape[-1]


class AttentionBase(nn.Module):
    """Shared weight computation for every attention variant (see the module docstring)."""

    #: Set by a subclass whose ``transform_weights`` must see the softmax matrix.
    needs_matrix: bool = False

    def __init__(self, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.attn_drop = float(attn_drop)
        self.store_attention = False
        self.attention_map: torch.Tensor | None = None

    def transform_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Hook for variants that mix heads after the softmax (talking heads, re-attention)."""
        return weights

    def transform_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Hook for variants that mix heads before the softmax (talking heads)."""
        return logits

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        scale: float | torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """softmax(q k^T * scale + bias, masked) v for (B, H, N, d) inputs."""
        dropout = self.attn_drop if self.training else 0.0
        explicit = (
            self.needs_matrix
            or self.store_attention
            or isinstance(scale, torch.Tensor)
            or sdpa_falls_back_to_math(q, v)
        )
        if (
            isinstance(mask, PackedMask)
            and not explicit
            and bias is None
            and not dropout
            and mask.takes_varlen(q)
        ):  # a packed batch on CUDA: one variable-length sequence per image, no mask
            return mask.attend(q, k, v, scale=scale)
        mask = as_attention_mask(mask)
        if not explicit:
            attn_mask = mask
            if bias is not None:
                # A (H, N, N) bias sends CPU SDPA to its math fallback; (1, H, N, N) does not.
                bias = bias.unsqueeze(0) if bias.ndim == 3 else bias
                attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout, scale=scale
            )
        if scale is None:
            scale = q.shape[-1] ** -0.5
        if isinstance(scale, torch.Tensor):
            logits = (q @ k.transpose(-2, -1)) * scale
        else:
            # Scaling q (N x d) rather than the logits (N x N) saves a pass over the larger tensor.
            logits = (q * scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = _add_bias(logits, bias)
        logits = self.transform_logits(logits)
        if mask is not None:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        weights = self.transform_weights(logits.softmax(dim=-1))
        if self.store_attention:
            self.attention_map = weights.detach()
        if dropout:
            weights = F.dropout(weights, p=dropout)
        return weights @ v


def _add_bias(logits: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``logits + bias``, in place when the bias doesn't grow the logits (a fresh tensor
    autograd doesn't save); checked in Python: torch.broadcast_shapes costs ~70 us a call."""
    tail = logits.shape[logits.ndim - bias.ndim :]
    if bias.ndim <= logits.ndim and all(b in (1, n) for b, n in zip(bias.shape, tail, strict=True)):
        return logits.add_(bias)
    return logits + bias


class MhsaConfig(ComponentConfig):
    """Multi-head self-attention on the fused SDPA kernel, with optional qk-norm."""

    type: Literal["mhsa"] = "mhsa"
    head_dim: PositiveInt | None = None
    qkv_bias: bool = True
    #: With ``qkv_bias``: False gives queries and values a bias and fixes the key bias at zero
    #: (BEiT, EVA, Swin V2: ``q_bias`` / ``v_bias``; the zero is no parameter, so it can never
    #: train). A key bias adds ``q . b_k`` to every logit of a query's row, which the softmax
    #: cancels, so it was a parameter without effect.
    key_bias: bool = True
    #: Bias of the output projection (AIMv2 has none).
    proj_bias: bool = True
    qk_norm: bool = False
    #: Which norm ``qk_norm`` applies per head (Dehghani et al., 2023 use LayerNorm).
    qk_norm_type: NormKind = "layernorm"
    #: One set of qk-norm weights per head, shape (heads, 1, head_dim), instead of one shared by
    #: all heads (vit-pytorch's NaViT).
    qk_norm_per_head: bool = False
    #: eps of the qk norms.
    qk_norm_eps: PositiveFloat = 1e-5
    attn_drop: Rate = 0.0
    proj_drop: Rate = 0.0
    #: How the heads' outputs are laid side by side before the output projection: ``head-major``
    #: (head, then channel: the usual layout) or ``dim-major`` (channel, then head: timm's NesT,
    #: whose released weights expect it). Both span the same functions -- the two differ by a
    #: fixed permutation of the projection's input columns -- but a checkpoint only computes its
    #: function with the layout it was trained with, and that permutation depends on the head
    #: count, which no tensor shape records, so it is a property of the model, not of a converter.
    head_merge: Literal["head-major", "dim-major"] = "head-major"
    #: Scaled cosine attention (Swin V2, Liu et al. 2022, Sec. 3.2): logits are
    #: cos(q, k) / tau with a learned per-head tau, kept above ``1 / cosine_max_scale`` (the
    #: scale is stored as its log, ``logit_scale``, and clamped), instead of q.k / sqrt(d). Why:
    #: dot-product logits of large models grow with depth and a few pairs dominate; cosine
    #: logits are bounded.
    cosine: bool = False
    cosine_max_scale: PositiveFloat = 100.0

    #: Whether this config's attention computes its weights through
    #: :meth:`MultiHeadAttention.attend` and its projections through ``split_heads``, so the
    #: ``cosine`` and ``key_bias: false`` options act. Not inherited: a subclass config opts in
    #: (set it True in its body), so a variant that computes its weights its own way (a
    #: kernel approximation, a cross-covariance) cannot silently ignore them.
    shared_weight_options: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.shared_weight_options = bool(cls.__dict__.get("shared_weight_options", False))

    @model_validator(mode="after")
    def _options_this_attention_honours(self) -> MhsaConfig:
        if type(self).shared_weight_options:
            return self
        unhonoured = {"cosine": self.cosine is True, "key_bias": self.key_bias is False}
        for field, value in unhonoured.items():
            if value:
                raise SpecValueError(
                    field,
                    f"the {self.type} attention computes its weights its own way, so "
                    f"{field}: {getattr(self, field)} would have no effect here (it works in "
                    "the mhsa and window attentions)",
                )
        return self


def qk_norm(config: MhsaConfig, heads: int, head_dim: int) -> nn.Module:
    """The norm ``config`` applies to queries or keys (B, heads, N, head_dim); identity when off."""
    if not config.qk_norm:
        return nn.Identity()
    if config.qk_norm_per_head:
        return PerHeadNorm(config.qk_norm_type, heads, head_dim, config.qk_norm_eps)
    return make_norm(config.qk_norm_type, head_dim, config.qk_norm_eps)


class MultiHeadAttention(AttentionBase):
    """q, k, v projections -> multi-head attention -> output projection.

    Subclasses reuse the projections and override only what differs (how logits/weights are
    formed), which is why the maths of SDPA attention lives here once. The ``key_bias: false``
    and ``cosine`` options act in :meth:`split_heads` / :meth:`attend`, so every subclass that
    goes through them has them.
    """

    def __init__(self, dim: int, num_heads: int, config: MhsaConfig) -> None:
        super().__init__(config.attn_drop)
        self.num_heads = num_heads
        self.head_dim = config.head_dim or dim // num_heads
        inner = self.num_heads * self.head_dim
        separate = config.qkv_bias and not config.key_bias
        self.qkv = nn.Linear(dim, inner * 3, bias=config.qkv_bias and not separate)
        # q and v biases beside a bias-free qkv, the key's fixed at zero (``in_bias``)
        self.q_bias = nn.Parameter(torch.zeros(inner)) if separate else None
        self.v_bias = nn.Parameter(torch.zeros(inner)) if separate else None
        self.q_norm = qk_norm(config, self.num_heads, self.head_dim)
        self.k_norm = qk_norm(config, self.num_heads, self.head_dim)
        self.proj = nn.Linear(inner, dim, bias=config.proj_bias)
        self.proj_drop = nn.Dropout(config.proj_drop)
        self.dim_major = config.head_merge == "dim-major"
        if config.cosine:
            # Swin V2's initial temperature 0.1 (logit scale 10), stored as its log.
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
            self.max_log_scale = math.log(config.cosine_max_scale)

    def in_bias(self) -> torch.Tensor | None:
        """The bias of the fused q, k, v projection: ``qkv.bias``, or [q_bias, 0, v_bias]."""
        if self.q_bias is None:
            return self.qkv.bias
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, 3 * inner): queries, keys and values side by side."""
        if self.q_bias is None:
            return self.qkv(x)
        return F.linear(x, self.qkv.weight, self.in_bias())

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        qkv = self.project_qkv(x)
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        scale: float | torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`AttentionBase.attend`; with ``cosine`` the logits are cos(q, k) times the
        clamped learned per-head scale (folded into q, so SDPA still runs fused)."""
        if "logit_scale" in self._parameters:
            log_scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
            q = F.normalize(q, dim=-1) * log_scale
            k, scale = F.normalize(k, dim=-1), 1.0
        return super().attend(q, k, v, mask, scale=scale, bias=bias)

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = out.shape
        merged = out.permute(0, 2, 3, 1) if self.dim_major else out.transpose(1, 2)
        return self.proj_drop(self.proj(merged.reshape(b, n, -1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        return self.merge_heads(self.attend(q, k, v, mask))


def build_mhsa(config: MhsaConfig, ctx: BuildContext) -> MultiHeadAttention:
    """Multi-head self-attention (SDPA)."""
    return MultiHeadAttention(ctx.dim, ctx.num_heads, config)
