"""bf16 inference without autocast: the weights are cast once, not on every call.

Autocast keeps float32 weights and casts each one to bf16 inside every ``linear`` / ``conv`` call
(a full read and write of every weight per forward), and casts activations back and forth around
the ops it runs in float32. :func:`to_bf16_inference` instead casts the whole model once; the
accuracy-sensitive reductions still accumulate in float32 because torch's CPU and CUDA kernels
for ``layer_norm``, ``softmax`` and fused attention compute bf16 inputs in float32 internally
(their *opmath* type) and round only the result. Top-1 agreement with float32 is measured in
benchmarks/README.md (bf16 inference).

Training (and scoring during training) does use autocast -- the float32 master weights are what
the optimiser updates -- and :func:`autocast` is its one set-up.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

#: Values of ``--precision``.
PRECISIONS = ("fp32", "bf16")

#: Autocast's compute type for each mixed-precision setting of ``train.precision``.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16 / fp16 on ``device``'s type; nothing for ``fp32``."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class Bf16Inference(nn.Module):
    """A bf16 copy of a model that takes and returns float32 tensors (cast once at each end)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(torch.bfloat16).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.model(x.to(torch.bfloat16))
        if isinstance(out, tuple | list):
            return tuple(o.float() for o in out)
        return out.float()

    def __getattr__(self, name: str):  # input_size, num_classes, vitzoo_spec of the model
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def for_inference(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """The eval-mode model at ``precision`` (``fp32`` returns it unchanged)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    model = model.eval()
    return Bf16Inference(model) if precision == "bf16" else model
