"""The objective base class, its config base, and the output every training step returns.

See :mod:`vitzoo.objectives` for the contract. This module knows no objective by name; how an
objective is found and built is in :mod:`vitzoo.objectives.build`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from vitzoo.config import ComponentConfig, SpecValueError

#: Capability words that describe how a model exposes its features (see ``VitzooModel``).
CAPABILITY_WORDS: frozenset[str] = frozenset({"tokens", "feature-maps"})


class ObjectiveConfig(ComponentConfig):
    """Base of every objective config.

    ``requires_any``: the model must have at least one of these capabilities (empty: any model).
    ``excludes``: architecture tags the objective cannot work with (``"drops-tokens"``: encoders
    that merge or drop tokens cannot give per-patch predictions).
    """

    requires_any: ClassVar[frozenset[str]] = frozenset()
    excludes: ClassVar[frozenset[str]] = frozenset()

    def incompatibility(self, tags: Any, *, decided: bool) -> str | None:
        """Why a model with these tags/capabilities cannot serve this objective, or ``None``.

        ``decided``: the tags are known to describe the model completely (build time); at spec
        time an architecture without capability tags is left to the build-time check.
        """
        tags = set(tags)
        known = CAPABILITY_WORDS & tags
        if self.requires_any and (known or decided) and not (self.requires_any & known):
            return (
                f"objective {self.type!r} needs a model with capability "  # type: ignore[attr-defined]
                f"{' or '.join(sorted(self.requires_any))}; the model has "
                f"{sorted(known) or '(none)'}"
            )
        clash = self.excludes & tags
        if clash:
            return (
                f"objective {self.type!r} cannot train a model tagged "  # type: ignore[attr-defined]
                f"{sorted(clash)} (its encoder does not return one token per patch)"
            )
        return None

    def check(self, architecture: str = "", architecture_tags: Any = (), **_: Any) -> None:
        """Spec-time compatibility, from the architecture's registration tags."""
        reason = self.incompatibility(architecture_tags, decided=False)
        if reason:
            raise SpecValueError("type", f"{reason} (model.type {architecture!r})")


@dataclass
class ObjectiveOutput:
    """What one training step's forward returns: the scalar loss and named, detached metrics."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def make_output(loss: torch.Tensor, **metrics: torch.Tensor | float) -> ObjectiveOutput:
    """Pack a loss and metrics; ``metrics["loss"]`` is always the (detached) loss."""
    logged = {"loss": loss.detach()}
    for name, value in metrics.items():
        logged[name] = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value)
    return ObjectiveOutput(loss=loss, metrics=logged)


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max is the target (a metric several objectives log)."""
    return (logits.argmax(dim=-1) == targets).float().mean()


class Objective(nn.Module):
    """A training wrapper around ``model`` (the thing being trained, reachable as ``.model``).

    Subclasses implement :meth:`forward`; they add their own heads as submodules and keep
    anything that must not be trained or saved (teachers) frozen or unregistered.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor | list[torch.Tensor], targets: torch.Tensor | None = None
    ) -> ObjectiveOutput:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def after_step(self) -> None:
        """Called once after each optimiser step (EMA teachers, centres). Default: nothing."""

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """What the optimiser should update: every parameter that requires a gradient."""
        return (p for p in self.parameters() if p.requires_grad)

    def frozen_parameters(self) -> Iterator[torch.Tensor]:
        """Parameters the objective uses but must never update (teachers, EMA copies)."""
        return (p for p in self.parameters() if not p.requires_grad)

    def extract_encoder(self) -> nn.Module:
        """The trained model alone, as the plain classifier its spec describes."""
        return self.model
