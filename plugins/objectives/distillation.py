"""DeiT distillation (Touvron et al. 2021): the supervised loss plus a frozen teacher's targets.

The student side is the core's ``supervised`` objective (label smoothing, mixup/cutmix, class
weights); this module adds where the teacher comes from and the distillation term.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from vitzoo import ComponentConfig, SpecValueError
from vitzoo.config import PositiveFloat, Probability
from vitzoo.objectives import ObjectiveContext, ObjectiveOutput
from vitzoo.objectives.base import accuracy, make_output
from vitzoo.objectives.supervised import (
    SupervisedConfig,
    SupervisedObjective,
    as_outputs,
    mix_batch,
)


class TeacherSource(ComponentConfig):
    """Where the teacher comes from: exactly one of a preset name, a spec mapping, a checkpoint."""

    preset: str | None = None
    spec: dict[str, Any] | None = None
    checkpoint: str | None = None
    #: Spec overrides applied to a preset or spec teacher, e.g. ``{"num_classes": 10}``.
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _exactly_one(self) -> TeacherSource:
        given = [n for n in ("preset", "spec", "checkpoint") if getattr(self, n) is not None]
        if len(given) != 1:
            raise SpecValueError(
                "teacher",
                f"give exactly one of preset, spec, checkpoint (got {given or 'none'})",
            )
        if self.checkpoint is not None and self.overrides:
            raise SpecValueError("overrides", "a checkpoint teacher cannot take spec overrides")
        return self

    def nested_specs(self) -> dict[str, tuple[Any, dict[str, Any]]]:
        """The spec this teacher is built from (field -> (source, overrides)), so validating the
        student's spec validates the teacher's too (see :mod:`vitzoo.rules`)."""
        if self.spec is not None:
            return {"spec": (self.spec, self.overrides)}
        if self.preset is not None:
            return {"preset": (self.preset, self.overrides)}
        return {}


class DistillationConfig(SupervisedConfig):
    """DeiT distillation (Touvron et al. 2021): labels + a frozen teacher's soft or hard targets."""

    type: Literal["distillation"] = "distillation"  # type: ignore[assignment]
    teacher: TeacherSource
    #: "hard": CE against the teacher's argmax (DeiT's best); "soft": KL at ``temperature``.
    kind: Literal["hard", "soft"] = "hard"
    alpha: Probability = Field(0.5, ge=0.0, le=1.0)
    temperature: PositiveFloat = Field(3.0, gt=0.0)


def build_teacher(source: TeacherSource, system: Any) -> nn.Module:
    """Build (or load) the teacher described by ``source`` through the normal spec machinery."""
    from vitzoo.api import build
    from vitzoo.checkpoint import load

    if source.checkpoint is not None:
        return load(source.checkpoint, system=system)
    spec = source.preset if source.preset is not None else source.spec
    return build(spec, system=system, **source.overrides)


class DistillationObjective(SupervisedObjective):
    """The teacher is held outside the module tree, so it is neither trained nor saved."""

    def __init__(
        self, config: DistillationConfig, octx: ObjectiveContext, teacher: nn.Module
    ) -> None:
        super().__init__(config, octx)
        teacher_classes = getattr(teacher, "num_classes", None)
        student_classes = getattr(octx.model, "num_classes", None)
        if None not in (teacher_classes, student_classes) and teacher_classes != student_classes:
            raise ValueError(
                f"objective.teacher: the teacher predicts {teacher_classes} classes but the "
                f"student predicts {student_classes}; set teacher.overrides.num_classes"
            )
        teacher.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not a registered submodule

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> DistillationObjective:
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)  # .to() / .half() move the teacher along
        return self

    def frozen_parameters(self) -> Any:
        return iter(list(super().frozen_parameters()) + list(self.teacher.parameters()))

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ObjectiveOutput:
        if targets is None:
            raise ValueError("the distillation objective needs class targets")
        config: DistillationConfig = self.config  # type: ignore[assignment]
        if self.training:
            images, t_a, t_b, lam = mix_batch(images, targets, config)
        else:
            t_a, t_b, lam = targets, targets, 1.0
        outputs = as_outputs(self.model(images))
        cls_logits, dist_logits = outputs[0], outputs[-1]  # a plain head distils its only output
        with torch.no_grad():
            teacher_logits = as_outputs(self.teacher(images))[0].float()
        base = self.classification_loss(cls_logits, t_a, t_b, lam)
        if config.kind == "hard":
            distil = F.cross_entropy(dist_logits, teacher_logits.argmax(dim=-1))
        else:
            tau = config.temperature
            distil = F.kl_div(
                F.log_softmax(dist_logits / tau, dim=-1),
                F.log_softmax(teacher_logits / tau, dim=-1),
                reduction="batchmean",
                log_target=True,
            ) * (tau * tau)
        loss = (1 - config.alpha) * base + config.alpha * distil
        return make_output(
            loss,
            accuracy=accuracy(cls_logits.detach(), targets),
            teacher_agreement=accuracy(dist_logits.detach(), teacher_logits.argmax(dim=-1)),
            label_loss=base,
            distillation_loss=distil,
        )


def build_distillation(config: DistillationConfig, octx: ObjectiveContext) -> DistillationObjective:
    """DeiT distillation from a frozen teacher (hard or soft)."""
    teacher = octx.teacher
    if teacher is None:
        teacher = build_teacher(config.teacher, octx.system)
    return DistillationObjective(config, octx, teacher)
