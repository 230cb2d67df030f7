"""Normalisation layers a spec can choose: LayerNorm (the ViT default) or RMSNorm.

RMSNorm (Zhang & Sennrich, 2019, arXiv:1910.07467) rescales by the root mean square without
re-centring or a bias; several recent ViT recipes (and most LLM-derived blocks) use it. Keeping
the choice in one factory means every block, the qk-norm and the ViT base's final norm offer the
same two options with the same meaning.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

#: The norms a spec may name wherever it chooses one.
NormKind = Literal["layernorm", "rmsnorm"]


def make_norm(kind: NormKind, dim: int, eps: float = 1e-6) -> nn.Module:
    """A norm over the last axis of width ``dim``."""
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    return nn.LayerNorm(dim, eps=eps)
