"""Record both outputs of a distilled timm model (DeiT, PiT) besides its eval output.

timm's distilled models return ``(head(cls), head_dist(dist))`` only in distillation training
and their mean otherwise. A fixture runs in eval mode, so without this the per-head logits
would never be compared. The class swap changes ``forward`` only: the state dict (timm's key
names) is untouched.
"""

from __future__ import annotations

import torch
from torch import nn


def with_both_heads(model: nn.Module) -> nn.Module:
    """Make ``model(x)`` return (class-head logits, distillation-head logits, eval output)."""
    base = type(model)

    class BothHeads(base):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            tokens = self.forward_features(x)
            return self.head(tokens[:, 0]), self.head_dist(tokens[:, 1]), base.forward(self, x)

    BothHeads.__name__ = f"{base.__name__}BothHeads"
    model.__class__ = BothHeads
    return model
