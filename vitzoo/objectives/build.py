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

from vitzoo.capabilities import needs_of, offers_of_model, phrase, unmet
from vitzoo.errors import SpecError, SpecIssue
from vitzoo.objectives.base import Objective, ObjectiveConfig
from vitzoo.objectives.context import ObjectiveContext
from vitzoo.plugins import get_plugin_system
from vitzoo.spec import SpecBase, resolved_config, spec_error_from

#: What a spec without an ``objective:`` section trains with (registered by the core itself).
DEFAULT_OBJECTIVE = "supervised"


def check_compatible(config: ObjectiveConfig, model: nn.Module, registry: Any) -> None:
    """Build-time check that ``model`` offers what the objective needs (a clear error if not).

    The model's offers are its architecture's registered ones; a model built without a vitzoo
    spec declares nothing and is trusted (the objective fails on its own terms if it must).
    """
    offers = offers_of_model(model, registry)
    if offers is None:
        return
    spec = model.vitzoo_spec
    needs = needs_of(registry.get("objective", config.type))  # type: ignore[attr-defined]
    missing = unmet(needs, offers)
    if missing:
        wanted = "; ".join(phrase(w) for w in missing)
        raise SpecError(
            [
                SpecIssue(
                    "objective.type",
                    f"objective {config.type!r} needs {wanted}; model.type "  # type: ignore[attr-defined]
                    f"{spec.model.type!r} ({type(model).__name__}) does not offer it",
                )
            ]
        )


def _objective_config(source: Any, model: nn.Module, system: Any) -> ObjectiveConfig:
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
