"""Heads: pooled features -> logits. ``num_classes == 0`` gives an identity head (features)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.config import ComponentConfig, Rate, SpecValueError


def linear_or_identity(num_features: int, num_classes: int) -> nn.Module:
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()


#: A norm of the pooled vector owned by one classifier (LeViT's heads: BatchNorm -> Linear).
HeadNorm = Literal["none", "batchnorm"]


def classifier(num_features: int, num_classes: int, norm: str = "none") -> nn.Module:
    """Linear classifier, preceded by its own BatchNorm when ``norm == "batchnorm"``.

    Why per classifier: LeViT's released models (official code, timm, HF) normalise the pooled
    vector separately for the class and the distillation head, with two sets of statistics.
    ``num_classes == 0`` gives an identity (features), without the norm, as the references do.
    """
    if num_classes <= 0:
        return nn.Identity()
    if norm == "batchnorm":
        return nn.Sequential(nn.BatchNorm1d(num_features), nn.Linear(num_features, num_classes))
    return nn.Linear(num_features, num_classes)


class LinearHeadConfig(ComponentConfig):
    """One linear layer (optionally after dropout)."""

    type: Literal["linear"] = "linear"
    dropout: Rate = 0.0
    #: ``batchnorm``: BatchNorm1d of the pooled vector before the linear layer (LeViT).
    norm: HeadNorm = "none"


class LinearHead(nn.Module):
    def __init__(
        self, num_features: int, num_classes: int, dropout: float, norm: str = "none"
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = classifier(num_features, num_classes, norm)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(pooled))


def build_linear_head(config: LinearHeadConfig, ctx: BuildContext) -> LinearHead:
    """Linear classifier."""
    return LinearHead(ctx.num_features, ctx.num_classes, config.dropout, config.norm)


class ProjectionHeadConfig(ComponentConfig):
    """A linear map without bias from the pooled width to ``num_classes`` outputs: CLIP's image
    projection (``num_classes`` is then the embedding width, 512 for ViT-B CLIP)."""

    type: Literal["projection"] = "projection"


class ProjectionHead(nn.Module):
    """``pooled @ W.T``: OpenAI / OpenCLIP ``visual.proj`` (stored transposed there), Hugging
    Face ``visual_projection``. Its output is the released image embedding. The Linear is
    ``fc`` like the linear head's, so a classifier and a projection share their weight's name
    (timm stores both as ``head.weight``)."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = (
            nn.Linear(num_features, num_classes, bias=False) if num_classes > 0 else nn.Identity()
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


def build_projection_head(config: ProjectionHeadConfig, ctx: BuildContext) -> ProjectionHead:
    """Bias-free linear projection (CLIP's image embedding)."""
    return ProjectionHead(ctx.num_features, ctx.num_classes)


class DistillationHeadConfig(ComponentConfig):
    """DeiT: class-token and distillation-token classifiers; a pair in training, their mean in eval."""

    type: Literal["distillation"] = "distillation"
    #: ``batchnorm``: each of the two classifiers normalises the pooled vector with its own
    #: BatchNorm1d first (LeViT's released heads).
    norm: HeadNorm = "none"

    def check(self, distillation_token: bool = False, **_: Any) -> None:
        if not distillation_token:
            raise SpecValueError("type", "the distillation head needs distillation_token: true")


class DistillationHead(nn.Module):
    """Input (B, 2, D): [class token, distillation token]."""

    def __init__(self, num_features: int, num_classes: int, norm: str = "none") -> None:
        super().__init__()
        self.fc = classifier(num_features, num_classes, norm)
        self.fc_dist = classifier(num_features, num_classes, norm)
        #: When True, training mode also returns the averaged logits (e.g. plain fine-tuning).
        self.distilled_training = True

    def forward(self, pooled: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if pooled.ndim != 3 or pooled.shape[1] != 2:
            raise ValueError(
                f"distillation head expects (B, 2, D) pooled tokens, got {tuple(pooled.shape)}"
            )
        cls_logits, dist_logits = self.fc(pooled[:, 0]), self.fc_dist(pooled[:, 1])
        if self.training and self.distilled_training:
            return cls_logits, dist_logits
        return (cls_logits + dist_logits) / 2


def build_distillation_head(config: DistillationHeadConfig, ctx: BuildContext) -> DistillationHead:
    """DeiT distillation head."""
    return DistillationHead(ctx.num_features, ctx.num_classes, config.norm)
