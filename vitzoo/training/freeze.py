"""``train.freeze``: which parameters a fine-tune updates, read from the model's own layers.

Depth comes from the model protocol's ``parameter_layers()`` (the same reading layer-wise
learning-rate decay uses): 0 is the input side, ``1..N`` the blocks (a hierarchical model's
blocks within its stages), ``N + 1`` what follows the last block (final norm, classifier). So
"all but the last 2 blocks" means the same thing for a ViT, a Swin-like model or CrossViT, with
no family named here.

Freezing is ``requires_grad = False``: the optimiser (:mod:`vitzoo.training.optim`) only takes
parameters that require a gradient, so frozen ones get no optimiser state and no weight decay;
autograd builds no graph through a frozen prefix. BatchNorm statistics of frozen modules are held
too (:func:`hold_frozen_norms`), so frozen tensors -- parameters and buffers -- stay bit-identical.
Nothing is cached: every step runs the frozen part on the step's (augmented) images.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from vitzoo.errors import SpecError, SpecIssue


def model_layers(model: nn.Module) -> tuple[dict[str, int], int]:
    """``(depth of each parameter name, deepest)`` through the model protocol (a plain module:
    the generic reading of its module tree)."""
    if hasattr(model, "parameter_layers"):
        return model.parameter_layers()
    from vitzoo.components.model import parameter_layers

    return parameter_layers(model)


def is_classifier(name: str) -> bool:
    """The protocol names the classifier ``head*`` at the top level (CrossViT: ``heads``)."""
    return name.split(".", 1)[0].startswith("head")


@dataclass(frozen=True)
class FreezePlan:
    """What a ``train.freeze`` setting freezes in one model."""

    frozen: frozenset[str]
    trainable: frozenset[str]
    blocks: int

    def summary(self, setting: object) -> str:
        return (
            f"train.freeze={setting}: {len(self.frozen)} parameter tensors frozen, "
            f"{len(self.trainable)} trained ({self.blocks} layers in the model)"
        )


def plan_freeze(model: nn.Module, setting: str | int) -> FreezePlan:
    """The parameters ``setting`` freezes: ``"none"``, ``"backbone"`` (all but the classifier)
    or N (all but the last N layers and what follows them). N larger than the model's layer
    count is a spec error naming the count."""
    layers, deepest = model_layers(model)
    blocks = deepest - 1
    names = [n for n, _ in model.named_parameters()]
    if setting == "none":
        frozen: set[str] = set()
    elif setting == "backbone":
        frozen = {n for n in names if not is_classifier(n)}
    else:
        keep = int(setting)
        if keep > blocks:
            raise SpecError(
                [
                    SpecIssue(
                        "train.freeze",
                        f"{keep} trainable layers asked, but this {type(model).__name__} has "
                        f"{blocks}; allowed: 0..{blocks}, backbone or none",
                    )
                ]
            )
        cutoff = deepest - keep
        frozen = {n for n in names if layers.get(n, deepest) < cutoff and not is_classifier(n)}
    return FreezePlan(frozenset(frozen), frozenset(set(names) - frozen), blocks)


def apply_freeze(model: nn.Module, setting: str | int) -> FreezePlan:
    """Freeze what ``setting`` says (see :func:`plan_freeze`); returns the plan."""
    plan = plan_freeze(model, setting)
    for name, param in model.named_parameters():
        if name in plan.frozen:
            param.requires_grad_(False)
    return plan


def frozen_norms(model: nn.Module) -> Iterable[nn.Module]:
    """Modules with running statistics (BatchNorm) whose parameters are all frozen."""
    for module in model.modules():
        if not isinstance(module, nn.modules.batchnorm._NormBase):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            yield module


def hold_frozen_norms(model: nn.Module) -> None:
    """Put frozen BatchNorms in eval mode (call after ``model.train()``): in training mode they
    would renormalise with batch statistics and overwrite their running ones."""
    for module in frozen_norms(model):
        module.eval()
