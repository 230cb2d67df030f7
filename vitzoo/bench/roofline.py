"""How fast could this model run here? FLOPs per call and the machine's matmul rate.

A model's speed is read against the rate this machine reaches on the matrix multiplication the
model spends most of its FLOPs in (its *dominant GEMM shape*): ``achieved GFLOP/s / matmul
GFLOP/s`` is the fraction of the roofline reached. FLOPs come from ``torch.utils.flop_counter``
(a multiply-add is 2 FLOPs) and are counted with grad mode on: under ``no_grad`` /
``inference_mode`` torch 2.13's module tracker crashes on the staged (hierarchical) models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


@dataclass(frozen=True)
class GemmShape:
    """``batch`` independent (m x k) @ (k x n) products (batch 1: a plain mm/addmm)."""

    batch: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n

    def __str__(self) -> str:
        lead = f"{self.batch}x" if self.batch > 1 else ""
        return f"{lead}{self.m}x{self.k}x{self.n}"


class GemmRecorder(TorchDispatchMode):
    """Records the shape of every mm / addmm / bmm / baddbmm call and the FLOPs it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: Counter[GemmShape] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        packet = func.overloadpacket
        shape = None
        if packet in (aten.mm, aten.addmm):
            a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
            shape = GemmShape(1, a.shape[0], a.shape[1], b.shape[1])
        elif packet in (aten.bmm, aten.baddbmm):
            a, b = (args[0], args[1]) if packet is aten.bmm else (args[1], args[2])
            shape = GemmShape(a.shape[0], a.shape[1], a.shape[2], b.shape[2])
        if shape is not None:
            self.flops[shape] += shape.flops
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one call, the share in matrix multiplications and the dominant GEMM shape."""

    total: int
    gemm: int
    dominant: GemmShape | None

    @property
    def gemm_fraction(self) -> float:
        return self.gemm / self.total if self.total else 0.0


def count_flops(fn: Callable[[], Any]) -> FlopCount:
    """Run ``fn`` once (grad mode on, see the module docstring) and count what it computes."""
    recorder = GemmRecorder()
    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter, recorder:
        fn()
    dominant = max(recorder.flops, key=recorder.flops.__getitem__, default=None)
    return FlopCount(counter.get_total_flops(), sum(recorder.flops.values()), dominant)


class MatmulProbe:
    """One product at a GEMM shape, as a workload for :func:`vitzoo.bench.timing.interleaved`.

    Timed interleaved with the model, so the rate is measured under the same machine load.
    """

    def __init__(self, shape: GemmShape, dtype: torch.dtype, device: str | torch.device) -> None:
        self.shape = shape
        gen = torch.Generator().manual_seed(0)
        b, m, k, n = shape.batch, shape.m, shape.k, shape.n
        lead = (b,) if b > 1 else ()
        self.a = torch.randn(*lead, m, k, generator=gen).to(device, dtype)
        self.b = torch.randn(*lead, k, n, generator=gen).to(device, dtype)
        self.out = torch.empty(*lead, m, n, device=device, dtype=dtype)

    def __call__(self) -> None:
        if self.shape.batch > 1:
            torch.bmm(self.a, self.b, out=self.out)
        else:
            torch.mm(self.a, self.b, out=self.out)
