"""Poolings: ``forward(tokens, num_prefix_tokens) -> (B, D)`` (or (B, K, D) for multi-token).

A pooling whose vector is wider than the tokens (``cls-mean``: 2 D) says so through its
config's ``pooled_width(dim)``; the model reads it with :func:`pooled_width`, so its
``num_features`` and the head's input follow.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.config import ComponentConfig, SpecValueError


class ClsPoolConfig(ComponentConfig):
    """Take the class token (the first prefix token)."""

    type: Literal["cls"] = "cls"

    def check(self, class_token: bool = True, **_: Any) -> None:
        if not class_token:
            raise SpecValueError(
                "type", "cls pooling needs a class token; set class_token: true or use type: mean"
            )


class ClsPool(nn.Module):
    def forward(self, tokens: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return tokens[:, 0]


class MeanPoolConfig(ComponentConfig):
    """Average the patch tokens (prefix tokens excluded)."""

    type: Literal["mean"] = "mean"


def pooled_tokens(
    tokens: torch.Tensor,
    mask: torch.Tensor | None,
    num_prefix_tokens: int,
    include_prefix: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens (and key-padding mask) an attention pooling reads: every token, or the patch
    tokens only (``include_prefix: false``, timm's MAP head on a model with a class token)."""
    if include_prefix or not num_prefix_tokens:
        return tokens, mask
    return tokens[:, num_prefix_tokens:], None if mask is None else mask[:, num_prefix_tokens:]


class MeanPool(nn.Module):
    def forward(self, tokens: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return tokens[:, num_prefix_tokens:].mean(dim=1)


class ClsMeanPoolConfig(ComponentConfig):
    """The class token and the mean of the patch tokens, side by side: (B, 2 D).

    The linear-probe feature DINOv2's model card recommends (and Hugging Face's
    ``Dinov2ForImageClassification`` classifies). Every prefix token -- registers and a
    distillation token too -- is left out of the mean: averaging the registers in is a bug
    (transformers #37817), since they carry global scratch state, not image patches.
    """

    type: Literal["cls-mean"] = "cls-mean"

    def check(self, class_token: bool = True, **_: Any) -> None:
        if not class_token:
            raise SpecValueError(
                "type",
                "cls-mean pooling needs a class token; set class_token: true or use type: mean",
            )

    def pooled_width(self, dim: int) -> int:
        return 2 * dim


class ClsMeanPool(nn.Module):
    def forward(self, tokens: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return torch.cat([tokens[:, 0], tokens[:, num_prefix_tokens:].mean(dim=1)], dim=-1)


def pooled_width(config: Any, dim: int) -> int:
    """The width of the vector ``config``'s pooling gives from ``dim``-wide tokens (``dim``
    unless the pooling config says otherwise through ``pooled_width``)."""
    width = getattr(config, "pooled_width", None)
    return int(width(dim)) if callable(width) else dim


class ClsDistPoolConfig(ComponentConfig):
    """Class and distillation tokens side by side (B, 2, D), for the DeiT distillation head."""

    type: Literal["cls-dist"] = "cls-dist"

    def check(self, class_token: bool = True, distillation_token: bool = False, **_: Any) -> None:
        if not (class_token and distillation_token):
            raise SpecValueError(
                "type", "cls-dist pooling needs class_token: true and distillation_token: true"
            )


class ClsDistPool(nn.Module):
    def forward(self, tokens: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return tokens[:, :2]


def build_cls_pool(config: ClsPoolConfig, ctx: BuildContext) -> ClsPool:
    """Class-token pooling."""
    return ClsPool()


def build_mean_pool(config: MeanPoolConfig, ctx: BuildContext) -> MeanPool:
    """Global average pooling over patch tokens."""
    return MeanPool()


def build_cls_mean_pool(config: ClsMeanPoolConfig, ctx: BuildContext) -> ClsMeanPool:
    """Class token + mean of the patch tokens (DINOv2's linear-probe feature)."""
    return ClsMeanPool()


def build_cls_dist_pool(config: ClsDistPoolConfig, ctx: BuildContext) -> ClsDistPool:
    """Class + distillation token pooling (DeiT)."""
    return ClsDistPool()
