"""Record a model's output at its own input size and at a second one, each the reference's way.

Families whose released models run at other input sizes resample their learned position table,
and each reference resamples its own way (bicubic or bilinear, antialiased or not, DINOv2's
``interpolate_offset``): that is part of the function a preset must reproduce. The second input
is the fixture's input cropped to ``size`` (the test crops it the same way), so one stored
input serves both. Only ``forward`` changes: the state dict keeps the reference's own keys.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The second input: the top-left ``size`` of ``x``."""
    return x[..., : size[0], : size[1]]


def with_second_size(
    model: nn.Module,
    size: tuple[int, int],
    resized: Callable[[nn.Module, tuple[int, int]], nn.Module] | None = None,
    run: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
) -> nn.Module:
    """Make ``model(x)`` return ``(*run(model, x), *run(model, crop(x)))`` and, with
    ``resized`` (a copy of the model rebuilt for ``size`` by the reference's own call, e.g.
    timm's ``set_input_size``), ``*run(resized(copy, size), crop(x))`` after them.

    ``run`` defaults to the model's own forward (one output)."""
    base = type(model)
    own = run or (lambda module, x: (base.forward(module, x),))

    class SecondSize(base):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            small = crop(x, size)
            outputs = (*own(self, x), *own(self, small))
            if resized is not None:
                other = resized(copy.deepcopy(self), size)
                outputs = (*outputs, *own(other, small))
            return outputs

    SecondSize.__name__ = f"{base.__name__}SecondSize"
    model.__class__ = SecondSize
    return model
