"""Where ``vitzoo train`` gets its loss: the spec's registered objective (the one place to change).

Objectives follow the contract in :mod:`vitzoo.objectives`. A spec without an ``objective:``
section trains with ``supervised`` defaults (cross-entropy with label smoothing, mixup/cutmix),
which the core registers itself, so training never depends on a plugin being enabled.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitzoo.objectives import Objective, build_objective
from vitzoo.objectives.build import DEFAULT_OBJECTIVE


def classification_logits(output: Any) -> torch.Tensor:
    """One logits tensor from a model output (a distillation pair is averaged)."""
    if isinstance(output, tuple | list):
        return torch.stack(list(output)).mean(dim=0)
    return output


def make_objective(
    spec: Any, model: nn.Module, system: Any, *, class_weights: torch.Tensor | None = None
) -> Objective:
    """The objective the spec names, else ``supervised``.

    ``class_weights`` (one per class, for ``train.class_weights: balanced``) reach objectives
    that weight their loss by class; the others ignore them.
    """
    configured = getattr(spec, "objective", None) or DEFAULT_OBJECTIVE
    return build_objective(configured, model, system=system, class_weights=class_weights)
