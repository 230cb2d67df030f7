"""An exponential moving average of the model's weights (Polyak averaging).

On small datasets the EMA of the weights usually validates better and more steadily than the
raw weights of the last step. The average is a full copy of the model (same spec, so it is
saved and loaded like any vitzoo checkpoint), updated after every optimiser step:

    ema = d * ema + (1 - d) * weights,   d = min(decay, (1 + t) / (10 + t))

The warm-up of ``d`` (TensorFlow's ``ExponentialMovingAverage(num_updates=t)``) keeps the early
average from being stuck near the random initialisation on runs of a few hundred steps.
Buffers (BatchNorm statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """The averaged copy and how many updates it has seen (``updates`` is checkpointed)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        own = dict(model.named_parameters())
        for name, averaged in self.module.named_parameters():
            averaged.lerp_(own[name].detach().to(averaged.dtype), 1.0 - d)
        own_buffers = dict(model.named_buffers())
        for name, buffer in self.module.named_buffers():
            if name in own_buffers:
                buffer.copy_(own_buffers[name])
        self.updates += 1

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``ema.<name>`` tensors for the run's state file."""
        return {
            f"ema.{k}": v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        state = {k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")}
        self.module.load_state_dict(state)
        self.updates = updates
