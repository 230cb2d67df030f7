"""Poolings: ``forward(tokens, num_prefix_tokens) -> (B, D)`` (or (B, K, D) for multi-token)."""

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


class MeanPool(nn.Module):
    def forward(self, tokens: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return tokens[:, num_prefix_tokens:].mean(dim=1)


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


def build_cls_dist_pool(config: ClsDistPoolConfig, ctx: BuildContext) -> ClsDistPool:
    """Class + distillation token pooling (DeiT)."""
    return ClsDistPool()
