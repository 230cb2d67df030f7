"""What ``vitzoo bench`` measures for one model: speed, latency, memory, FLOPs, roofline.

For each batch size an inference workload (and a training step with ``train``) plus one
:class:`~vitzoo.bench.roofline.MatmulProbe` at the model's dominant GEMM shape are timed in ONE
interleaved run (:func:`vitzoo.bench.timing.interleaved`), so the matmul rate the model is read
against was measured under the same machine load as the model itself.
"""

from __future__ import annotations

import copy
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.bench.roofline import FlopCount, MatmulProbe, count_flops
from vitzoo.bench.timing import Spread, interleaved, peak_memory_mib, percentile, rates
from vitzoo.errors import BenchError
from vitzoo.precision import (
    PRECISIONS,
    autocast,
    cpu_bf16_capability,
    for_inference,
    slow_bf16_note,
)
from vitzoo.runtime import RUNTIMES

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class BenchOptions:
    """The knobs of one ``vitzoo bench`` run (see the command's help)."""

    batches: Sequence[int] = (1, 16)
    precision: str = "fp32"
    runtime: str = "torch"
    compile: bool = False
    train: bool = False
    repeats: int = 5
    iters: int = 3
    warmup: int = 1
    device: str = "cpu"
    clock: str = "wall"

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise BenchError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.runtime not in RUNTIMES:
            raise BenchError(f"--runtime must be one of {', '.join(RUNTIMES)}")
        if self.runtime == "onnxruntime":
            if self.precision != "fp32":
                raise BenchError("--runtime onnxruntime runs fp32 only (its CPU kernels)")
            if self.compile or self.train:
                raise BenchError("--runtime onnxruntime is inference only, without --compile")
            if self.device != "cpu":
                raise BenchError("--runtime onnxruntime runs on --device cpu here")
        if not self.batches or min(self.batches) < 1:
            raise BenchError("--batch needs positive batch sizes, e.g. 1,16")
        if self.repeats < 1 or self.iters < 1:
            raise BenchError("--repeats and --iters must be at least 1")


def inference_callable(model: nn.Module, options: BenchOptions) -> Callable[[torch.Tensor], Any]:
    """The model as deployed at these options: ONNX Runtime, bf16 weights, or compiled."""
    if options.runtime == "onnxruntime":
        from vitzoo.export import onnx_bytes
        from vitzoo.runtime import OnnxRuntimeModule

        return OnnxRuntimeModule(onnx_bytes(model))
    if options.precision != "fp32":
        model = copy.deepcopy(model)  # the cast is in place; a training step needs float32
    prepared = for_inference(model, options.precision).to(options.device)
    return torch.compile(prepared) if options.compile else prepared


def logits_loss(output: Any, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the logits; distilled models return (cls, dist) pairs in training."""
    outputs = output if isinstance(output, tuple | list) else (output,)
    return sum(F.cross_entropy(o.float(), target) for o in outputs) / len(outputs)


class TrainStep:
    """forward + cross-entropy + backward + AdamW step (bf16: under autocast, the usual recipe)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, options: BenchOptions) -> None:
        self.model = model.train()
        self.step_fn = torch.compile(model) if options.compile else model
        self.x = x
        classes = int(getattr(model, "num_classes", 0) or 1)
        self.y = torch.randint(0, classes, (x.shape[0],), device=x.device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.precision = options.precision
        self.device = torch.device(options.device)

    def __call__(self) -> None:
        with autocast(self.device, self.precision):
            loss = logits_loss(self.step_fn(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class Inference:
    def __init__(self, fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> None:
        self.fn, self.x = fn, x

    def __call__(self) -> None:
        with torch.inference_mode():
            self.fn(self.x)


def model_flops(model: nn.Module, x: torch.Tensor, train: bool) -> FlopCount:
    """FLOPs of one call on eager float32 (the same maths whatever the runtime or precision)."""
    if not train:
        return count_flops(lambda: model.eval()(x))
    model.train()
    y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def step() -> None:
        logits_loss(model(x), y).backward()

    try:
        return count_flops(step)
    finally:
        model.zero_grad(set_to_none=True)


Mode = tuple[str, int]  #: ("infer" or "train", batch size)


def bench_model(model: nn.Module, options: BenchOptions, *, label: str = "") -> dict[str, Any]:
    """Measure ``model`` at ``options``; returns the JSON-ready report (see the README)."""
    options.check()
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: CUDA is not available on this machine")
    model = model.eval().to(device)
    input_size = tuple(model.input_size)
    batches = sorted(set(options.batches))
    modes = [("infer", b) for b in batches] + ([("train", max(batches))] if options.train else [])
    inputs, flops = _inputs_and_flops(model, modes, input_size, device)
    model.eval()
    largest = flops[("infer", max(batches))]
    workloads, probe = _workloads(model, options, modes, inputs, largest, device)
    times = interleaved(
        workloads,
        repeats=options.repeats,
        iters=options.iters,
        warmup=options.warmup,
        device=device,
        clock=options.clock,
    )
    matmul = _matmul_summary(times["matmul"], probe) if probe is not None else None
    results = []
    for mode, batch in modes:
        key = f"{mode} b{batch}"
        peak = peak_memory_mib(workloads[key], device)
        if mode == "train":
            model.eval()
        results.append(_result_row(mode, batch, times[key], flops[(mode, batch)], peak, matmul))
    return _report(model, options, label, input_size, device, matmul, results)


def _inputs_and_flops(
    model: nn.Module, modes: list[Mode], input_size: tuple[int, ...], device: torch.device
) -> tuple[dict[Mode, torch.Tensor], dict[Mode, FlopCount]]:
    """A random input per mode and the FLOPs of one call on it (input then count, mode by mode:
    a training count draws dropout from the same generator as the next input)."""
    inputs, flops = {}, {}
    for mode, batch in modes:
        x = torch.randn(batch, *input_size, device=device)
        inputs[(mode, batch)] = x
        flops[(mode, batch)] = model_flops(model, x, mode == "train")
    return inputs, flops


def _workloads(
    model: nn.Module,
    options: BenchOptions,
    modes: list[Mode],
    inputs: dict[Mode, torch.Tensor],
    largest: FlopCount,
    device: torch.device,
) -> tuple[dict[str, Callable[[], None]], MatmulProbe | None]:
    """One timed callable per mode (``"infer b16"``), plus the matmul probe at the largest
    inference batch's dominant GEMM shape (``"matmul"``) where it has one."""
    workloads: dict[str, Callable[[], None]] = {}
    run_model = inference_callable(model, options) if any(m == "infer" for m, _ in modes) else None
    for mode, batch in modes:
        x = inputs[(mode, batch)]
        key = f"{mode} b{batch}"
        if mode == "infer":
            workloads[key] = Inference(run_model, x)
        else:
            workloads[key] = TrainStep(model, x, options)
    probe = None
    if largest.dominant is not None:
        probe_dtype = DTYPES[options.precision] if options.runtime == "torch" else torch.float32
        probe = MatmulProbe(largest.dominant, probe_dtype, device)
        workloads["matmul"] = probe
    return workloads, probe


def _matmul_summary(per_rep: Sequence[Sequence[float]], probe: MatmulProbe) -> dict[str, Any]:
    gflops = [g / 1e9 for g in rates(per_rep, probe.shape.flops)]
    return {"shape": str(probe.shape), "gflops_per_s": Spread.of(gflops).as_dict()}


def _result_row(
    mode: str,
    batch: int,
    per_rep: Sequence[Sequence[float]],
    count: FlopCount,
    peak: float | None,
    matmul: dict[str, Any] | None,
) -> dict[str, Any]:
    """One row of ``results``: throughput, latency, memory and the roofline reading."""
    images = Spread.of(rates(per_rep, batch))
    calls = [t for rep in per_rep for t in rep]
    achieved = images.median * count.total / batch / 1e9
    return {
        "mode": mode,
        "batch": batch,
        "images_per_s": images.as_dict(),
        "latency_ms": {
            "p50": 1e3 * percentile(calls, 50),
            "p90": 1e3 * percentile(calls, 90),
            "min": 1e3 * min(calls),
            "max": 1e3 * max(calls),
        },
        "peak_memory_mib": peak,
        "flops_per_image": count.total / batch,
        "gemm_flop_fraction": count.gemm_fraction,
        "dominant_gemm": str(count.dominant) if count.dominant else None,
        "achieved_gflops_per_s": achieved,
        "matmul_fraction": (achieved / matmul["gflops_per_s"]["median"] if matmul else None),
    }


def _report(
    model: nn.Module,
    options: BenchOptions,
    label: str,
    input_size: tuple[int, ...],
    device: torch.device,
    matmul: dict[str, Any] | None,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "model": label,
        "architecture": getattr(getattr(model, "vitzoo_spec", None), "model", None)
        and model.vitzoo_spec.model.type,
        "params": sum(p.numel() for p in model.parameters()),
        "input_size": list(input_size),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "precision": options.precision,
        "runtime": options.runtime,
        "compile": options.compile,
        "repeats": options.repeats,
        "iters": options.iters,
        "clock": options.clock,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_bf16": cpu_bf16_capability() if device.type == "cpu" else None,
        "notes": [n for n in [slow_bf16_note(device)] if n and options.precision == "bf16"],
        "matmul": matmul,
        "results": results,
    }


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (Linux), else the machine type."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
