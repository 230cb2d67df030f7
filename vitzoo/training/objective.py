"""Where ``vitzoo train`` gets its loss: the spec's registered objective (the one place to change).

Objectives follow the contract in :mod:`vitzoo.objectives` and are registered by plugins (the
built-in ``objectives`` plugin provides ``supervised``: cross-entropy with label smoothing,
mixup/cutmix). A spec without an ``objective:`` section trains with ``supervised`` defaults.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitzoo.objectives import Objective, build_objective


def classification_logits(output: Any) -> torch.Tensor:
    """One logits tensor from a model output (a distillation pair is averaged)."""
    if isinstance(output, tuple | list):
        return torch.stack(list(output)).mean(dim=0)
    return output


def make_objective(spec: Any, model: nn.Module, system: Any, **extra: Any) -> Objective:
    """The objective the spec names, else ``supervised``; a clear error if none is registered.

    ``extra`` reaches the objective's factory (``class_weights=`` a per-class tensor).
    """
    configured = getattr(spec, "objective", None)
    if configured is None and ("objective", "supervised") not in system.registry:
        failed = ", ".join(r.name for r in system.failed) or "none"
        raise ValueError(
            "objective: the spec names no objective and no plugin registers 'supervised' "
            f"(is the built-in 'objectives' plugin disabled? failed plugins: {failed})"
        )
    return build_objective(configured or "supervised", model, system=system, **extra)
