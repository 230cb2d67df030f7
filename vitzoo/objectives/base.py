"""The objective base class, its config base, and the output every training step returns.

See :mod:`vitzoo.objectives` for the contract. This module knows no objective by name; how an
objective is found and built is in :mod:`vitzoo.objectives.build`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from vitzoo.config import ComponentConfig


class ObjectiveConfig(ComponentConfig):
    """Base of every objective config.

    What an objective needs from its model (``tokens`` for masked-image objectives, image input,
    a fixed patch grid) is declared at registration with ``needs=``, like every other part's
    needs, and checked by the one capability checker (:func:`vitzoo.capabilities.unmet`).
    """


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
