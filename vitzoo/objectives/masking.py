"""Maths shared by the masked-image objectives (MAE, SimMIM, MPP, MP3) and the EMA ones.

Everything here works on the public model protocol: patch-token order is the row-major order of
the patchifier's grid, and pixel patches are cut with the model's effective patch size (input size
divided by the token grid), so any patchifier that tiles the image works.
"""

from __future__ import annotations

import torch
from torch import nn


def effective_patch_size(model: nn.Module) -> tuple[int, ...]:
    """Pixels per token along each axis: the input size divided by the patchifier's grid."""
    size = tuple(model.input_size[1:])  # type: ignore[attr-defined]
    grid = tuple(model.patch.grid_for(size))  # type: ignore[attr-defined]
    if any(s % g for s, g in zip(size, grid, strict=True)):
        raise ValueError(f"the token grid {grid} does not tile the input {size} evenly")
    return tuple(s // g for s, g in zip(size, grid, strict=True))


def patchify_pixels(images: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, ph*pw*C), patches in row-major grid order (the token order)."""
    b, c, h, w = images.shape
    ph, pw = patch
    x = images.reshape(b, c, h // ph, ph, w // pw, pw)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // ph) * (w // pw), ph * pw * c)


def normalise_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch zero mean, unit variance (MAE's "norm_pix_loss" targets)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def random_split(
    batch: int, n: int, ratio: float, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose ``round(n * ratio)`` positions to mask per sample (at least one stays visible).

    Returns ``(keep_index (B, n_keep), masked (B, n) bool True=masked, restore (B, n))`` where
    ``restore`` undoes the shuffle: ``cat([kept, dropped]).gather(restore)`` is in grid order.
    """
    n_mask = min(n - 1, int(round(n * ratio)))
    shuffle = torch.rand(batch, n, device=device).argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    keep = shuffle[:, : n - n_mask]
    masked = torch.ones(batch, n, dtype=torch.bool, device=device)
    masked.scatter_(1, keep, False)
    return keep, masked, restore


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tokens[b, index[b]]`` for (B, N, D) tokens and (B, K) indices."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def mean_over_masked(values: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean of per-patch ``values`` (B, N) over the masked patches only (the ones to predict).

    One scalar over the whole batch, so each masked patch counts the same whatever its sample.
    """
    weights = masked.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * source, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)
