"""Conformance checks for training objectives: every objective on every compatible backbone.

An :class:`ObjectiveCase` pairs a registered objective (its registration ``example["config"]``)
with a registered image architecture (its ``example``, made one block deep where it has a
``depth`` integer). :func:`objective_cases` lists every compatible pair, so a new objective or a
new backbone is covered without editing a test. The checks are plain functions taking a case (or
an objective :class:`~vitzoo.testing.Variant`, which is its example host model):

* :func:`check_finite_scalar_loss` -- one training forward gives a finite scalar and metrics;
* :func:`check_gradients_reach_trainable` -- the objective's own parameters all get finite
  gradients, most of the model's do, and frozen parts (teachers, EMA copies) get none;
* :func:`check_loss_decreases` -- a few optimiser steps on one fixed batch lower the loss (the
  random masks / crops are re-seeded identically each step, so only the weights change).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from vitzoo.capabilities import needs_of, offers_of, unmet
from vitzoo.objectives import Objective, build_objective
from vitzoo.plugins import PluginSystem
from vitzoo.rules import problems
from vitzoo.spec import SpecBase, SpecError, validate_spec
from vitzoo.testing.checks import Check, register_check_generator, seeded
from vitzoo.testing.variants import Variant, plugin_system

BATCH = 4
STEPS = 6
LEARNING_RATE = 3e-3


@dataclass(frozen=True, eq=False)
class ObjectiveCase:
    """One objective on one backbone, both tiny."""

    objective: str
    architecture: str
    system: PluginSystem = field(repr=False)
    objective_config: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.objective}@{self.architecture}"

    def __str__(self) -> str:
        return f"objective {self.objective!r} on {self.architecture!r}"

    def spec(self) -> SpecBase:
        data = {
            "model": dict(self.model),
            "objective": {"type": self.objective, **self.objective_config},
        }
        return validate_spec(self.system.registry, data, file=f"<{self.id}>")

    def build(self, seed: int = 0) -> Objective:
        """The objective around a freshly built model, in training mode."""
        from vitzoo.builder import build_from_spec

        spec = self.spec()
        with seeded(seed):
            model = build_from_spec(spec, system=self.system)
            with torch.no_grad():  # zero-initialised gates (LeViT's residual BN) would hide
                for p in model.parameters():  # the layers behind them from every check
                    if p.is_floating_point():
                        p.add_(torch.randn_like(p) * 1e-2)
            objective = build_objective(spec, model, system=self.system)
        return objective.train()

    def batch(self, objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed batch of images in [0, 1] (MPP bins colours over that range) and labels."""
        model = objective.model
        classes = max(int(getattr(model, "num_classes", 0)), 1)
        with seeded(11):
            images = torch.rand(BATCH, *model.input_size)  # type: ignore[misc]
            labels = torch.randint(0, classes, (BATCH,))
        return images, labels


def _tiny_architecture(entry: Any, system: PluginSystem) -> dict[str, Any]:
    """The architecture's example, one block deep when its spec accepts that."""
    model = {"type": entry.name, **copy.deepcopy(dict(entry.example))}
    if isinstance(model.get("depth"), int) and model["depth"] > 1:
        shallow = {**model, "depth": 1}
        try:
            validate_spec(system.registry, {"model": shallow})
        except SpecError:  # per-layer settings (token budgets) tied to the example's depth
            return model
        return shallow
    return model


def compatible(objective_entry: Any, architecture_entry: Any) -> bool:
    """Image architectures with spatial features that offer what the objective needs (the one
    capability checker, :func:`vitzoo.capabilities.unmet`, decides)."""
    offers = offers_of(architecture_entry)
    if "image" not in offers or "spatial-features" not in offers:
        return False
    return not unmet(needs_of(objective_entry), offers)


def rules_accept(
    objective_entry: Any, config: Mapping[str, Any], model: dict[str, Any], system: PluginSystem
) -> bool:
    """Whether the whole-spec rules accept the objective on this tiny model: beyond what the
    architecture offers, its default parts must take what the objective does to the tokens
    (MAE encodes a subset of them, which EVA-02's RoPE and BEiT's relative bias cannot run)."""
    data = {"model": model, "objective": {"type": objective_entry.name, **config}}
    try:
        spec = validate_spec(system.registry, data)
    except SpecError:
        return True  # the case itself reports what is wrong with the example
    return not problems(system.registry, spec)


def objective_cases(
    system: PluginSystem | None = None,
    *,
    objectives: list[str] | None = None,
    architectures: list[str] | None = None,
) -> list[ObjectiveCase]:
    """Every (objective, compatible image architecture) pair registered in ``system``."""
    system = system or plugin_system()
    registry = system.registry
    cases = []
    for obj in registry.entries("objective"):
        if objectives is not None and obj.name not in objectives:
            continue
        config = dict((obj.example or {}).get("config", {}))
        for arch in registry.entries("architecture"):
            if architectures is not None and arch.name not in architectures:
                continue
            if not compatible(obj, arch):
                continue
            model = _tiny_architecture(arch, system)
            if rules_accept(obj, config, model, system):
                cases.append(ObjectiveCase(obj.name, arch.name, system, config, model))
    return cases


def as_case(subject: ObjectiveCase | Variant) -> ObjectiveCase:
    """An objective variant (from :func:`vitzoo.testing.variants`) as a case on its host model."""
    if isinstance(subject, ObjectiveCase):
        return subject
    if subject.kind != "objective":
        raise TypeError(f"{subject} is not an objective")
    data = subject.tiny_spec_data()
    config = {k: v for k, v in data["objective"].items() if k != "type"}
    return ObjectiveCase(subject.name, data["model"]["type"], subject.system, config, data["model"])


def _fail(case: ObjectiveCase, message: str) -> AssertionError:
    return AssertionError(f"{case}: {message}")


def _loss(case: ObjectiveCase, objective: Objective, seed: int = 7) -> torch.Tensor:
    images, labels = case.batch(objective)
    with seeded(seed):  # same masks / crops / mixing every call
        out = objective(images, labels)
    loss = out.loss
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise _fail(
            case,
            f"the loss must be a scalar tensor, got {type(loss).__name__} {getattr(loss, 'shape', '')}",
        )
    if not torch.isfinite(loss):
        raise _fail(case, f"the loss is not finite: {float(loss)}")
    if "loss" not in out.metrics:
        raise _fail(case, "metrics must include 'loss'")
    for name, value in out.metrics.items():
        if not isinstance(value, torch.Tensor) or value.requires_grad:
            raise _fail(case, f"metric {name!r} must be a detached tensor")
    return loss


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------
def check_finite_scalar_loss(subject: ObjectiveCase | Variant) -> None:
    """One training forward gives a finite scalar loss and detached, named metrics."""
    case = as_case(subject)
    _loss(case, case.build())


def check_gradients_reach_trainable(subject: ObjectiveCase | Variant) -> None:
    """Own parameters all get finite gradients, most model ones do, frozen ones get none."""
    case = as_case(subject)
    objective = case.build()
    trainable = {id(p) for p in objective.trainable_parameters()}
    frozen = list(objective.frozen_parameters())
    if any(id(p) in trainable for p in frozen):
        raise _fail(case, "a parameter is both trainable and frozen")
    if any(p.requires_grad for p in frozen):
        raise _fail(case, "frozen parameters (teacher / EMA) must have requires_grad=False")
    _loss(case, objective).backward()
    model_ids = {id(p) for p in objective.model.parameters()}
    own_missing, bad = [], []
    model_with_grad = model_total = 0
    for name, p in objective.named_parameters():
        if id(p) not in trainable:
            continue
        if p.grad is not None and not torch.isfinite(p.grad).all():
            bad.append(name)
        if id(p) in model_ids:
            model_total += 1
            model_with_grad += p.grad is not None
        elif p.grad is None:
            own_missing.append(name)
    if bad:
        raise _fail(case, f"non-finite gradients in {bad[:6]}")
    if own_missing:
        raise _fail(case, f"the objective's own parameters get no gradient: {own_missing[:6]}")
    if model_with_grad * 2 < model_total:
        raise _fail(
            case, f"only {model_with_grad} of {model_total} model parameters get a gradient"
        )
    leaked = [p for p in frozen if p.grad is not None]
    if leaked:
        raise _fail(case, f"{len(leaked)} frozen parameters (teacher / EMA) received gradients")


def check_loss_decreases(subject: ObjectiveCase | Variant) -> None:
    """A few Adam steps (with ``after_step``) on one fixed batch lower the loss."""
    case = as_case(subject)
    objective = case.build()
    optimiser = torch.optim.Adam(list(objective.trainable_parameters()), lr=LEARNING_RATE)
    losses = []
    for _ in range(STEPS):
        loss = _loss(case, objective)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        objective.after_step()
        losses.append(float(loss.detach()))
    final = float(_loss(case, objective).detach())
    if not final < losses[0]:
        raise _fail(case, f"the loss did not fall over {STEPS} steps: {losses + [final]}")


OBJECTIVE_CHECKS: tuple[Check, ...] = (
    check_finite_scalar_loss,
    check_gradients_reach_trainable,
    check_loss_decreases,
)


@register_check_generator("objective")
def yield_objective_checks(variant: Variant) -> Iterator[Check]:
    yield from OBJECTIVE_CHECKS


__all__ = [
    "OBJECTIVE_CHECKS",
    "ObjectiveCase",
    "as_case",
    "check_finite_scalar_loss",
    "check_gradients_reach_trainable",
    "check_loss_decreases",
    "compatible",
    "objective_cases",
]
