"""The ``supervised`` objective: classification, the core's own and the trainer's default.

It lives in the core (registered by :mod:`vitzoo.core_plugin`, not by a plugin), so a
spec without an ``objective:`` section trains even with every plugin objective disabled.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from vitzoo.config import NonNegativeFloat, Probability, Rate
from vitzoo.objectives.base import (
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    accuracy,
    make_output,
)
from vitzoo.objectives.context import ObjectiveContext


class SupervisedConfig(ObjectiveConfig):
    """Cross-entropy with label smoothing; optional mixup / cutmix (one of them per batch)."""

    type: Literal["supervised"] = "supervised"
    label_smoothing: Rate = Field(0.1, ge=0.0, lt=1.0)
    mixup_alpha: NonNegativeFloat = Field(0.0, ge=0.0)
    cutmix_alpha: NonNegativeFloat = Field(0.0, ge=0.0)
    mix_prob: Probability = Field(1.0, ge=0.0, le=1.0)


def as_outputs(output: Any) -> list[torch.Tensor]:
    """A model's output as a list: one logits tensor, or (cls, dist) from a distillation head."""
    return list(output) if isinstance(output, tuple | list) else [output]


def mix_batch(
    images: torch.Tensor, targets: torch.Tensor, config: SupervisedConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) with a shuffled copy of the batch.

    Returns ``(images, targets_a, targets_b, lam)``: the loss is
    ``lam * CE(targets_a) + (1 - lam) * CE(targets_b)``.
    """
    alphas = [a for a in (config.mixup_alpha, config.cutmix_alpha) if a > 0]
    if not alphas or torch.rand(()) >= config.mix_prob:
        return images, targets, targets, 1.0
    use_cutmix = config.cutmix_alpha > 0 and (config.mixup_alpha == 0 or bool(torch.rand(()) < 0.5))
    alpha = config.cutmix_alpha if use_cutmix else config.mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(images.shape[0], device=images.device)
    if not use_cutmix:
        return lam * images + (1 - lam) * images[perm], targets, targets[perm], lam
    h, w = images.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    return mixed, targets, targets[perm], lam


class SupervisedObjective(Objective):
    """Cross-entropy classification with label smoothing and optional mixup/cutmix.

    A two-output (distillation-head) model has both outputs trained on labels. The context's
    ``class_weights`` (one per class) weight each sample's cross-entropy by its class; they
    follow the module across devices but are not saved (the data decides them).
    """

    def __init__(self, config: SupervisedConfig, octx: ObjectiveContext) -> None:
        super().__init__(octx.model)
        self.config = config
        self.class_weights: torch.Tensor | None
        given = octx.class_weights
        weights = None if given is None else torch.as_tensor(given).float()
        self.register_buffer("class_weights", weights, persistent=False)

    def classification_loss(
        self, logits: torch.Tensor, targets_a: torch.Tensor, targets_b: torch.Tensor, lam: float
    ) -> torch.Tensor:
        smoothing = self.config.label_smoothing
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        loss = F.cross_entropy(logits, targets_a, weight=weight, label_smoothing=smoothing)
        if lam < 1.0:
            loss = lam * loss + (1 - lam) * F.cross_entropy(
                logits, targets_b, weight=weight, label_smoothing=smoothing
            )
        return loss

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ObjectiveOutput:
        if targets is None:
            raise ValueError("the supervised objective needs class targets")
        if self.training:
            images, t_a, t_b, lam = mix_batch(images, targets, self.config)
        else:
            t_a, t_b, lam = targets, targets, 1.0
        outputs = as_outputs(self.model(images))
        loss = sum(self.classification_loss(o, t_a, t_b, lam) for o in outputs) / len(outputs)
        return make_output(loss, accuracy=accuracy(outputs[0].detach(), targets))
