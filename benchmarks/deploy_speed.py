"""Deployment speed against timm and the matmul roofline, each scenario in ONE interleaved run.

Scenarios (``--scenario``):

* ``onnx``: ViT-S/16 at batch 1 (latency): vitzoo in ONNX Runtime, vitzoo eager, timm eager.
* ``bf16``: ViT-S/16 at batch 16: vitzoo with bf16 weights (``--precision bf16``), vitzoo under
  bf16 autocast, timm under bf16 autocast, and a bf16 matmul at the model's dominant GEMM shape;
  ``--compiled`` adds the bf16-weights model through ``torch.compile`` with inductor's weight
  freezing (constant-folded weights, bias/GELU fused into the GEMMs), compiled before timing.
* ``small``: the small / conv-heavy presets (``--models``) at batch 16, float32: vitzoo and timm
  eager, and a float32 matmul at each model's dominant GEMM shape.
* ``layout``: MaxViT-T (``--models``) as built (channels-last from the stem, issue 12) against
  the same model run in the NCHW layout it had before (the stem without the channels-last copy)
  and timm, float32 inference: the before/after of that change in one interleaved run.
* ``compile``: a training step (forward, cross-entropy, backward, AdamW) of small ViTs
  (``--models``, presets or spec files; default the digits example and ViT-Ti/16), eager
  against ``torch.compile`` -- what ``train.compile: true`` does to the trainer's step -- with
  the compile time (the first compiled call, wall and CPU seconds incl. compile workers)
  reported apart from the steady-state rate.

Every workload of a scenario (models and matmul probes alike) is timed in one interleaved run
with a rotating order (:func:`vitzoo.bench.timing.interleaved`, the method of
``compare_peers.py`` and ``vitzoo bench``); figures are medians with min/max over repetitions.
FLOPs come from :func:`vitzoo.bench.roofline.count_flops` on the vitzoo model.

    python benchmarks/deploy_speed.py --scenario small --threads 2 --repeats 5 --clock cpu
    python benchmarks/deploy_speed.py --scenario bf16 --device cuda --repeats 20 --iters 10
    python benchmarks/deploy_speed.py --scenario compile --threads 2 --repeats 5 --clock cpu

Needs timm next to vitzoo (``pip install -e .[bench,export]``, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_peers import build_library_model  # noqa: E402

from vitzoo.bench.roofline import MatmulProbe, count_flops  # noqa: E402
from vitzoo.bench.runner import BenchOptions, TrainStep, model_flops  # noqa: E402
from vitzoo.bench.timing import Spread, interleaved, oversubscription, rates  # noqa: E402
from vitzoo.precision import for_inference  # noqa: E402

SMALL = "mobilevit-xs,pit-ti,maxvit-t,twins-svt-s,levit-128s"
#: Small ViTs for the compile scenario: the digits example (4 blocks, dim 64, 16 px) and ViT-Ti.
COMPILE = str(Path(__file__).resolve().parent.parent / "examples" / "digits.yaml") + ",vit-ti16"


def inference(model: Any, x: torch.Tensor, autocast: bool = False) -> Callable[[], None]:
    device_type = x.device.type

    def run() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast),
        ):
            model(x)

    return run


def frozen_compiled(model: Any, x: torch.Tensor) -> Callable[[], None]:
    """Inference through ``torch.compile`` with inductor's freezing, compiled (and timed) here.

    Freezing treats the weights as constants, which lets inductor fold the bf16 weights and fuse
    the bias add and GELU into the GEMM epilogues -- the elementwise passes that bound the
    eager bf16 path (issue 12's profile). The compile is done before the interleaved timing.
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.no_grad():
        compiled(x)
    print(f"  compiled bf16 model in {time.perf_counter() - start:.1f} s (wall)")

    def run() -> None:
        with torch.no_grad():
            compiled(x)

    return run


def nchw_variant(model: Any) -> Any:
    """A copy of a staged model whose stem runs on the NCHW image (the pre-issue-12 layout)."""
    from vitzoo.components.hierarchical import HierarchicalModel

    variant = copy.deepcopy(model)
    variant.run_stem = types.MethodType(HierarchicalModel.run_stem, variant)
    return variant


def seconds_now() -> tuple[float, float]:
    """(wall, CPU) seconds; CPU includes finished child processes (inductor's compile workers)."""
    t = os.times()
    return time.perf_counter(), t.user + t.system + t.children_user + t.children_system


def compile_workloads(
    args: argparse.Namespace, preset: str, work: dict[str, Any], info: dict[str, dict]
) -> None:
    """Eager and compiled training steps of one model; the first compiled call is timed apart."""
    device = torch.device(args.device)
    model, size = build_library_model("vitzoo", preset)
    model = model.to(device)
    name = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
    x = torch.randn(args.batch, *size, device=device)
    flops = model_flops(model, x, train=True)
    probe = f"matmul {name}"
    if flops.dominant is not None:
        work[probe] = MatmulProbe(flops.dominant, torch.float32, device)
        info[probe] = {"shape": str(flops.dominant), "flops": flops.dominant.flops}
    steps = {
        f"eager {name}": TrainStep(model, x, BenchOptions(device=args.device)),
        f"compiled {name}": TrainStep(
            copy.deepcopy(model), x, BenchOptions(device=args.device, compile=True)
        ),
    }
    for key, step in steps.items():
        wall0, cpu0 = seconds_now()
        step()  # eager: a first call; compiled: tracing + inductor compilation + the call
        wall1, cpu1 = seconds_now()
        work[key] = step
        info[key] = {
            "batch": args.batch,
            "flops_per_image": flops.total / args.batch,
            "probe": probe,
            "first_call_s": {"wall": wall1 - wall0, "cpu": cpu1 - cpu0},
        }
        print(f"  first call {key}: {wall1 - wall0:.1f} s wall, {cpu1 - cpu0:.1f} CPU-s")


def scenario_workloads(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, dict]]:
    """name -> workload, and name -> {batch, flops per image, matmul probe name} for the report."""
    device = torch.device(args.device)
    work: dict[str, Any] = {}
    info: dict[str, dict] = {}
    if args.scenario == "compile":
        for preset in (args.models or COMPILE).split(","):
            compile_workloads(args, preset, work, info)
        return work, info
    default = "maxvit-t" if args.scenario == "layout" else SMALL
    presets = (
        ["vit-s16"] if args.scenario in ("onnx", "bf16") else (args.models or default).split(",")
    )
    batch = 1 if args.scenario == "onnx" else args.batch
    for preset in presets:
        vz, size = build_library_model("vitzoo", preset)
        vz = vz.eval().to(device)
        x = torch.randn(batch, *size, device=device)
        flops = count_flops(lambda m=vz, x=x: m(x))
        per_image = flops.total / batch
        probe = f"matmul {preset}"
        dtype = torch.bfloat16 if args.scenario == "bf16" else torch.float32
        if flops.dominant is not None:
            work[probe] = MatmulProbe(flops.dominant, dtype, device)
            info[probe] = {"shape": str(flops.dominant), "flops": flops.dominant.flops}
        try:
            timm_model, _ = build_library_model("timm", preset)
            timm_model = timm_model.eval().to(device)
        except Exception as exc:  # no timm or no mapping: vitzoo alone, against the roofline
            print(f"  no timm model for {preset}: {type(exc).__name__}: {exc}")
            timm_model = None
        entries: dict[str, Callable[[], None]] = {}
        if args.scenario == "onnx":
            from vitzoo.runtime import deployed

            entries["vitzoo onnxruntime"] = inference(deployed(vz, runtime="onnxruntime"), x.cpu())
            entries["vitzoo eager"] = inference(vz, x)
            if timm_model is not None:
                entries["timm eager"] = inference(timm_model, x)
        elif args.scenario == "layout":
            entries[f"vitzoo {preset}"] = inference(vz, x)
            entries[f"vitzoo-nchw {preset}"] = inference(nchw_variant(vz), x)
            if timm_model is not None:
                entries[f"timm {preset}"] = inference(timm_model, x)
        elif args.scenario == "bf16":
            import copy

            entries["vitzoo bf16 weights"] = inference(for_inference(copy.deepcopy(vz), "bf16"), x)
            if args.compiled:
                entries["vitzoo bf16 compiled"] = frozen_compiled(
                    for_inference(copy.deepcopy(vz), "bf16"), x
                )
            entries["vitzoo autocast"] = inference(vz, x, autocast=True)
            if timm_model is not None:
                entries["timm autocast"] = inference(timm_model, x, autocast=True)
        else:
            entries[f"vitzoo {preset}"] = inference(vz, x)
            if timm_model is not None:
                entries[f"timm {preset}"] = inference(timm_model, x)
        for name, fn in entries.items():
            work[name] = fn
            info[name] = {"batch": batch, "flops_per_image": per_image, "probe": probe}
    return work, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--scenario", choices=["onnx", "bf16", "small", "layout", "compile"], required=True
    )
    p.add_argument(
        "--models",
        help=f"presets (or spec files) for --scenario small (default {SMALL}), layout "
        "(default maxvit-t) or compile "
        "(default: the digits example and vit-ti16)",
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--compiled", action="store_true", help="bf16: add torch.compile with weight freezing"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    # threads = the idle cores (benchmarks/README.md, "Threads"); say so when there are fewer
    busy = oversubscription(args.threads, what="these timings") if args.device == "cpu" else None
    if busy:
        print(f"warning: {busy}", file=sys.stderr)
    torch.manual_seed(0)
    if args.scenario == "compile" and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        # A cold compile, as in a fresh training run: not inductor's cache of earlier runs.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="vitzoo-inductor-")
    work, info = scenario_workloads(args)
    times = interleaved(
        work,
        repeats=args.repeats,
        iters=args.iters,
        warmup=args.warmup,
        device=args.device,
        clock=args.clock,
    )
    device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    )
    report: dict[str, Any] = {
        "scenario": args.scenario,
        "device": args.device,
        "device_name": device_name,
        "threads": args.threads,
        "clock": args.clock,
        "repeats": args.repeats,
        "iters": args.iters,
        "torch": torch.__version__,
        "results": {},
    }
    gflops = {
        name: Spread.of([r / 1e9 for r in rates(times[name], meta["flops"])])
        for name, meta in info.items()
        if "shape" in meta
    }
    unit = "img/CPU-s" if args.clock == "cpu" else "img/s"
    print(
        f"\n{args.scenario}: {args.device} ({device_name}), {args.threads} threads, "
        f"median of {args.repeats} [min-max]"
    )
    for name, meta in info.items():
        if "shape" in meta:
            g = gflops[name]
            print(
                f"  {name:<28} {meta['shape']:>16}  {g.median:8.1f} GFLOP/s "
                f"[{g.min:.1f}-{g.max:.1f}]"
            )
            report["results"][name] = {"shape": meta["shape"], "gflops_per_s": g.as_dict()}
            continue
        ips = Spread.of(rates(times[name], meta["batch"]))
        latency = Spread.of([1e3 * sum(r) / len(r) for r in times[name]])
        achieved = ips.median * meta["flops_per_image"] / 1e9
        roof = gflops.get(meta["probe"])
        frac = achieved / roof.median if roof else float("nan")
        print(
            f"  {name:<28} {ips.median:8.2f} {unit} [{ips.min:.2f}-{ips.max:.2f}]  "
            f"{latency.median:8.1f} ms/call  {achieved:7.1f} GFLOP/s  {frac:5.0%} of matmul"
        )
        if "first_call_s" in meta:
            first = meta["first_call_s"]
            print(f"  {'':<28} first call {first['wall']:.1f} s wall, {first['cpu']:.1f} CPU-s")
        report["results"][name] = {
            **({"first_call_s": meta["first_call_s"]} if "first_call_s" in meta else {}),
            "batch": meta["batch"],
            "images_per_s": ips.as_dict(),
            "ms_per_call": latency.as_dict(),
            "flops_per_image": meta["flops_per_image"],
            "achieved_gflops_per_s": achieved,
            "matmul_fraction": frac,
        }
    report["ratios"] = ratios(report["results"])
    for label, value in report["ratios"].items():
        print(f"  {label:<44} {value:5.2f}x (medians)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


#: (numerator prefix, denominator prefix) pairs whose median throughputs are compared.
RATIO_PAIRS = (
    ("vitzoo ", "timm "),
    ("vitzoo ", "vitzoo-nchw "),
    ("vitzoo-nchw ", "timm "),
    ("compiled ", "eager "),
    ("vitzoo bf16 weights", "timm autocast"),
    ("vitzoo bf16 compiled", "timm autocast"),
    ("vitzoo bf16 compiled", "vitzoo bf16 weights"),
    ("vitzoo autocast", "timm autocast"),
    ("vitzoo onnxruntime", "timm eager"),
)


def ratios(results: dict[str, dict]) -> dict[str, float]:
    """Median images/s of each workload over its peer's: vitzoo / timm, compiled / eager."""
    out = {}
    for top, bottom in RATIO_PAIRS:
        for name, row in results.items():
            if not name.startswith(top) or "images_per_s" not in row:
                continue
            peer = bottom + name[len(top) :] if top.endswith(" ") else bottom
            if peer in results and peer != name:
                ips = row["images_per_s"]["median"] / results[peer]["images_per_s"]["median"]
                out[f"{name} / {peer}"] = ips
    return out


if __name__ == "__main__":
    raise SystemExit(main())
