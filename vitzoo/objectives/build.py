"""How an objective is found, checked against its model, and built: :func:`build_objective`.

Every caller that trains (``vitzoo train``, the conformance suite, the spec contract's trial run)
comes through here, so the default objective, the compatibility check and the
:class:`~vitzoo.objectives.context.ObjectiveContext` a factory receives are decided once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from vitzoo.objectives.base import CAPABILITY_WORDS, Objective, ObjectiveConfig
from vitzoo.objectives.context import ObjectiveContext

#: What a spec without an ``objective:`` section trains with (registered by the core itself).
DEFAULT_OBJECTIVE = "supervised"


def model_capabilities(model: nn.Module) -> frozenset[str]:
    return frozenset(getattr(model, "capabilities", frozenset()))


def check_compatible(config: ObjectiveConfig, model: nn.Module, registry: Any = None) -> None:
    """Build-time check that ``model`` offers what the objective needs (clear error if not)."""
    from vitzoo.spec import SpecError, SpecIssue

    tags = set(model_capabilities(model))
    spec = getattr(model, "vitzoo_spec", None)
    if spec is not None and registry is not None and ("architecture", spec.model.type) in registry:
        tags |= registry.get("architecture", spec.model.type).tags - CAPABILITY_WORDS
    reason = config.incompatibility(tags, decided=True)
    if reason:
        raise SpecError([SpecIssue("objective.type", f"{reason} ({type(model).__name__})")])


def _objective_config(source: Any, model: nn.Module, system: Any) -> ObjectiveConfig:
    from vitzoo.spec import SpecBase, resolved_config, spec_error_from

    if source is None:
        spec = getattr(model, "vitzoo_spec", None)
        source = getattr(spec, "objective", None) or {"type": DEFAULT_OBJECTIVE}
    if isinstance(source, SpecBase):
        source = getattr(source, "objective", None) or {"type": DEFAULT_OBJECTIVE}
    if isinstance(source, ObjectiveConfig):
        return source
    if isinstance(source, str):
        source = {"type": source}
    if not isinstance(source, Mapping) or "type" not in source:
        raise TypeError(
            "build_objective expects a spec, an objective config, a mapping with 'type', "
            f"or an objective name; got {type(source).__name__}"
        )
    registry = system.registry
    if ("objective", source["type"]) not in registry:
        raise KeyError(
            f"objective.type: unknown objective {source['type']!r}; registered: "
            f"{', '.join(registry.names('objective')) or '(none)'}"
        )
    cls = resolved_config(registry, "objective", source["type"])
    try:
        return cls.model_validate(dict(source))
    except ValidationError as exc:
        raise spec_error_from(exc, dict(source), file="<objective>") from None


def build_objective(
    source: Any,
    model: nn.Module,
    system: Any = None,
    *,
    class_weights: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
) -> Objective:
    """Build the objective ``source`` describes around ``model``.

    ``source``: a root spec (its ``objective`` section), an objective config, a mapping such as
    ``{"type": "mae", "mask_ratio": 0.75}``, an objective name, or ``None`` (the model's own
    spec's objective, else ``supervised``). ``class_weights`` (one per class) and ``teacher``
    (a ready module for distillation) reach the factory on its :class:`ObjectiveContext`.
    """
    from vitzoo.plugins import get_plugin_system

    system = system or get_plugin_system()
    config = _objective_config(source, model, system)
    check_compatible(config, model, system.registry)
    entry = system.registry.get("objective", config.type)  # type: ignore[attr-defined]
    octx = ObjectiveContext(model, system, class_weights=class_weights, teacher=teacher)
    objective = entry.factory(config, octx)
    if not isinstance(objective, Objective):
        raise TypeError(
            f"objective {config.type!r} factory returned {type(objective).__name__}, "  # type: ignore[attr-defined]
            "not a vitzoo.objectives.Objective"
        )
    return objective
