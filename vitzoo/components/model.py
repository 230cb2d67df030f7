"""The model protocol every vitzoo model follows, whatever its architecture.

Objectives, the CLI, checkpoints and the conformance suite talk to models only through this
protocol (never through private attribute paths), so a new architecture works with all of them
as soon as it implements it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class VitzooModel(nn.Module):
    """Base class of built models: timm-style classifier API plus introspection.

    Subclasses implement ``forward_features``, ``forward_head``, ``reset_classifier`` and
    ``forward_intermediates``, and set ``num_features``, ``num_classes``, ``num_prefix_tokens``.
    """

    num_features: int
    num_classes: int
    num_prefix_tokens: int = 0
    #: Expected input without the batch axis: (C, H, W) for images, (C, T, H, W) for video.
    input_size: tuple[int, ...] = ()
    #: What objectives may rely on: "tokens" (a flat token sequence with embed/encode),
    #: "feature-maps" (hierarchical stages returning (B, C, H, W)).
    capabilities: frozenset[str] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> Any:
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> Any:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def forward_intermediates(
        self, x: torch.Tensor, indices: list[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features and the output of each selected layer/stage (all when ``None``)."""
        raise NotImplementedError

    def example_input(
        self, batch_size: int = 2, *, device: Any = None, dtype: Any = None
    ) -> torch.Tensor:
        """A random input of the size this model was built for (used by checks and summaries)."""
        return torch.randn(batch_size, *self.input_size, device=device, dtype=dtype)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that an optimiser should not decay (positions, tokens)."""
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward to save memory."""
        self.grad_checkpointing = enable


def run_block(block: nn.Module, x: torch.Tensor, checkpoint: bool, **kwargs: Any) -> torch.Tensor:
    """Call ``block`` directly, or under activation checkpointing when training with it on."""
    if checkpoint and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint as ckpt

        return ckpt(block, x, use_reentrant=False, **kwargs)
    return block(x, **kwargs)
