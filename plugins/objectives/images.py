"""The one model check both objective families make: the model takes single images.

Masked-image objectives cut pixel patches and self-distillation objectives cut image crops, so
both refuse a model whose input is not (C, H, W) with a plain error at build time.
"""

from __future__ import annotations

from torch import nn


def require_images(model: nn.Module, objective: str) -> None:
    if len(getattr(model, "input_size", ())) != 3:
        raise ValueError(
            f"objective.type: {objective!r} works on image models (C, H, W); this model's "
            f"input_size is {getattr(model, 'input_size', None)}"
        )
