"""FAVOR+ (Choromanski et al., 2021, arXiv:2009.14794): softmax attention in linear time.

softmax(q k^T) is approximated by phi(q) phi(k)^T with positive random features
``phi(x) = exp(w x - |x|^2 / 2) / sqrt(m)``, so ``phi(q) (phi(k)^T v)`` costs O(N m d) instead of
O(N^2 d). Two users share this: the ``performer`` attention (multi-head, any model) and the
Performer token layer of T2T-ViT (one head, the paper's default token mixer).
"""

from __future__ import annotations

import math

import torch


def gaussian_orthogonal_features(num_features: int, dim: int) -> torch.Tensor:
    """``(num_features, dim)`` projection: orthogonal blocks, rows with chi(dim)-distributed norms.

    Orthogonal rows lower the estimator's variance (the paper's ORF); rescaling each row to the
    norm of a Gaussian vector keeps the estimate unbiased. Works on the meta device (no data).
    """
    blocks = []
    for _ in range(0, num_features, dim):
        gaussian = torch.randn(dim, dim)
        if gaussian.is_meta:
            blocks.append(gaussian)
            continue
        q, _ = torch.linalg.qr(gaussian)
        blocks.append(q.T)
    w = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, dim).norm(dim=1, keepdim=True)
    return w * norms


def positive_random_features(
    x: torch.Tensor, projection: torch.Tensor, *, stabilise: bool = False
) -> torch.Tensor:
    """``phi(x)`` for ``x`` (..., N, d) and ``projection`` (m, d): (..., N, m), all positive.

    ``stabilise`` subtracts the largest exponent per row before ``exp``; the factor cancels in
    :func:`linear_attention`'s normalisation, so only overflow behaviour changes.
    """
    exponent = x @ projection.T - (x * x).sum(dim=-1, keepdim=True) / 2
    if stabilise:
        exponent = exponent - exponent.amax(dim=-1, keepdim=True).detach()
    return torch.exp(exponent) / math.sqrt(projection.shape[0])


def linear_attention(
    q_features: torch.Tensor, k_features: torch.Tensor, v: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Row-normalised ``phi(q) (phi(k)^T v)`` for (..., N, m) features and (..., N, d) values."""
    context = k_features.transpose(-2, -1) @ v  # (..., m, d)
    normaliser = q_features @ k_features.sum(dim=-2).unsqueeze(-1)  # (..., N, 1)
    return (q_features @ context) / (normaliser + eps)
