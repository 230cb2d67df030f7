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

from vitzoo.errors import PerformanceWarning, warn

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


def native_cpu_bf16() -> bool | None:
    """Whether this CPU computes bf16 in its own instructions (oneDNN's probe: AVX-512 with
    its bf16 conversions, AVX512-BF16 or AMX); None where torch cannot say. Without them bf16
    is emulated: on an AVX2-only EPYC, ViT-S/16 ran 6x slower in bf16 than in fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def cpu_bf16_capability() -> dict[str, bool | None]:
    """What ``vitzoo bench`` reports about bf16 on this CPU (each None where unknown)."""

    def probe(name: str) -> bool | None:
        check = getattr(torch.cpu, name, None)
        try:
            return bool(check()) if callable(check) else None
        except RuntimeError:
            return None

    return {
        "native": native_cpu_bf16(),
        "avx512_bf16": probe("_is_avx512_bf16_supported"),
        "amx": probe("_is_amx_tile_supported"),
    }


def slow_bf16_note(device: torch.device | str) -> str | None:
    """The one line saying bf16 will be slow here, or None (a GPU, or a CPU with bf16)."""
    if torch.device(device).type != "cpu" or native_cpu_bf16() is not False:
        return None
    return (
        "this CPU has no native bf16 instructions (AVX-512 bf16 / AMX), so bf16 is emulated "
        "and runs several times slower than fp32 here (ViT-S/16: 6x); use fp32 on this machine"
    )


def warn_if_slow_bf16(device: torch.device | str) -> None:
    """:func:`slow_bf16_note` as a :class:`~vitzoo.errors.PerformanceWarning` (the command
    line prints it as one ``warning:`` line)."""
    note = slow_bf16_note(device)
    if note is not None:
        warn(note, PerformanceWarning)


def for_inference(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """The eval-mode model at ``precision`` (``fp32`` returns it unchanged); bf16 on a CPU
    without bf16 instructions says so (:func:`warn_if_slow_bf16`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    model = model.eval()
    if precision != "bf16":
        return model
    reference = next(iter(model.parameters()), None)
    warn_if_slow_bf16(reference.device if reference is not None else "cpu")
    return Bf16Inference(model)
