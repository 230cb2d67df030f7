"""Normalisation layers a spec can choose: LayerNorm (the ViT default), RMSNorm, or a LayerNorm
without a bias.

RMSNorm (Zhang & Sennrich, 2019, arXiv:1910.07467) rescales by the root mean square without
re-centring or a bias; several recent ViT recipes (and most LLM-derived blocks) use it. Keeping
the choice in one factory means every block, the qk-norm and the ViT base's final norm offer the
same options with the same meaning.

``layernorm-nobias`` is a LayerNorm whose shift is fixed at zero: vit-pytorch's NaViT (and the
JAX models it follows) normalise with a learned scale only -- its zero "beta" is a buffer, not a
parameter, so the released parameter count has no bias and a trained model never learned one.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

#: The norms a spec may name wherever it chooses one.
NormKind = Literal["layernorm", "rmsnorm", "layernorm-nobias"]


#: A norm that a part may also leave out (a patch embedding's, a pooling query's).
OptionalNorm = Literal["none", "layernorm", "rmsnorm", "layernorm-nobias"]


def make_optional_norm(kind: OptionalNorm, dim: int, eps: float = 1e-6) -> nn.Module:
    """:func:`make_norm`, or an identity for ``"none"``."""
    return nn.Identity() if kind == "none" else make_norm(kind, dim, eps)


def make_norm(kind: NormKind, dim: int, eps: float = 1e-6) -> nn.Module:
    """A norm over the last axis of width ``dim``."""
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    return nn.LayerNorm(dim, eps=eps, bias=kind != "layernorm-nobias")


class PerHeadNorm(nn.Module):
    """A norm over the last axis of ``(B, heads, N, width)`` with its own scale (and shift) per
    head: weights of shape ``(heads, 1, width)``.

    Why: vit-pytorch's NaViT normalises queries and keys with one learned scale per head (the
    usual qk-norm shares one across heads), so its weights only load into a per-head norm.
    """

    def __init__(self, kind: NormKind, heads: int, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.kind, self.width, self.eps = kind, width, eps
        self.weight = nn.Parameter(torch.ones(heads, 1, width))
        self.bias = nn.Parameter(torch.zeros(heads, 1, width)) if kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rmsnorm":
            out = F.rms_norm(x, (self.width,), None, self.eps)
        else:
            out = F.layer_norm(x, (self.width,), None, None, self.eps)
        out = out * self.weight
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"{self.kind}, heads={self.weight.shape[0]}, width={self.width}, eps={self.eps}"
