"""Throughput and memory of vitzoo against timm and vit-pytorch on the same architecture.

Each library builds the model from its own constructor (nothing is copied between them); the
script prints the parameter counts so a reader can see the comparison is like for like, then runs
ONE interleaved measurement: every repetition times each library once, in an order that rotates
per repetition, so drifting machine load (other processes, thermal state) hits all of them
alike. Numbers are the median over repetitions, reported as images/s and as a ratio to the
baseline library (timm where it has the model, else vit-pytorch).

    python benchmarks/compare_peers.py --model vit-s16 --device cpu --threads 2 --repeats 7

Peers are optional (``pip install -e .[bench]``); a library that is not installed, or that has no
constructor for the chosen model, is skipped with a message. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitzoo.bench.runner import logits_loss
from vitzoo.bench.timing import interleaved, oversubscription, peak_memory_mib, rates

# --------------------------------------------------------------------------------------------
# Peer constructors. Each entry maps a vitzoo preset to the *same architecture* in a peer library:
# timm by registered model name, vit-pytorch by class path and keyword arguments (hyper-parameters
# from the papers). Parameter counts are printed at run time, so a mismatch is visible.
# --------------------------------------------------------------------------------------------
VIT_S16_VP = dict(
    image_size=224, patch_size=16, num_classes=1000, dim=384, depth=12, heads=6, mlp_dim=1536
)

PEERS: dict[str, dict[str, Any]] = {
    "vit-ti16": {
        "timm": "vit_tiny_patch16_224",
        "vit-pytorch": ("vit_pytorch:ViT", {**VIT_S16_VP, "dim": 192, "heads": 3, "mlp_dim": 768}),
    },
    "vit-s16": {
        "timm": "vit_small_patch16_224",
        "vit-pytorch": ("vit_pytorch:ViT", {**VIT_S16_VP, "dim_head": 64}),
    },
    "vit-b16": {
        "timm": "vit_base_patch16_224",
        "vit-pytorch": (
            "vit_pytorch:ViT",
            {**VIT_S16_VP, "dim": 768, "heads": 12, "mlp_dim": 3072},
        ),
    },
    "deit-ti": {"timm": "deit_tiny_patch16_224"},
    "deit-s": {
        "timm": "deit_small_patch16_224",
        "vit-pytorch": ("vit_pytorch:ViT", {**VIT_S16_VP, "dim_head": 64}),
    },
    "deit-b": {"timm": "deit_base_patch16_224"},
    "deit-s-distilled": {
        "timm": "deit_small_distilled_patch16_224",
        "vit-pytorch": ("vit_pytorch.distill:DistillableViT", {**VIT_S16_VP, "dim_head": 64}),
    },
    "cait-xxs24": {
        "timm": "cait_xxs24_224",
        "vit-pytorch": (
            "vit_pytorch.cait:CaiT",
            dict(
                image_size=224,
                patch_size=16,
                num_classes=1000,
                dim=192,
                depth=24,
                cls_depth=2,
                heads=4,
                mlp_dim=768,
                dim_head=48,
            ),
        ),
    },
    "xcit-t12": {
        "timm": "xcit_tiny_12_p16_224",
        "vit-pytorch": (
            "vit_pytorch.xcit:XCiT",
            dict(
                image_size=224,
                patch_size=16,
                num_classes=1000,
                dim=192,
                depth=12,
                cls_depth=2,
                heads=4,
                mlp_dim=768,
                dim_head=48,
            ),
        ),
    },
    "t2t-vit-14": {
        "vit-pytorch": (
            "vit_pytorch.t2t:T2TViT",
            dict(image_size=224, num_classes=1000, dim=384, depth=14, heads=6, mlp_dim=1152),
        ),
    },
    # The paper feeds 240 px to both branches (vitzoo's presets); timm's defaults shrink the large
    # branch's input to 224 px (img_scale 224/240), a different network with fewer tokens.
    "crossvit-ti": {"timm": ("crossvit_tiny_240", {"img_scale": (1.0, 1.0)})},
    "crossvit-s": {"timm": ("crossvit_small_240", {"img_scale": (1.0, 1.0)})},
    "pit-ti": {"timm": "pit_ti_224"},
    "pit-s": {"timm": "pit_s_224"},
    "levit-128s": {
        "timm": "levit_128s",
        "vit-pytorch": (
            "vit_pytorch.levit:LeViT",
            dict(
                image_size=224,
                num_classes=1000,
                stages=3,
                dim=(128, 256, 384),
                depth=(2, 3, 4),
                heads=(4, 6, 8),
                mlp_mult=2,
                dim_key=16,
                dim_value=32,
            ),
        ),
    },
    "twins-svt-s": {"timm": "twins_svt_small"},
    "twins-pcpvt-s": {"timm": "twins_pcpvt_small"},
    "maxvit-t": {
        "timm": "maxvit_tiny_tf_224",
        "vit-pytorch": (
            "vit_pytorch.max_vit:MaxViT",
            dict(
                num_classes=1000,
                dim_conv_stem=64,
                dim=64,
                dim_head=32,
                depth=(2, 2, 5, 2),
                window_size=7,
                dropout=0.0,
            ),
        ),
    },
    "mobilevit-xs": {
        "timm": "mobilevit_xs",
        "vit-pytorch": (
            "vit_pytorch.mobile_vit:MobileViT",
            dict(
                image_size=(256, 256),
                dims=[96, 120, 144],
                channels=[16, 32, 48, 48, 64, 64, 80, 80, 96, 96, 384],
                num_classes=1000,
            ),
        ),
    },
    "cvt-13": {"vit-pytorch": ("vit_pytorch.cvt:CvT", dict(num_classes=1000))},
    "nest-t": {
        "timm": "nest_tiny",
        "vit-pytorch": (
            "vit_pytorch.nest:NesT",
            dict(
                image_size=224,
                patch_size=4,
                num_classes=1000,
                dim=96,
                heads=3,
                num_hierarchies=3,
                block_repeats=(2, 2, 8),
            ),
        ),
    },
}

LIBRARIES = ("vitzoo", "timm", "vit-pytorch")


# --------------------------------------------------------------------------------------------
# Importing peers
# --------------------------------------------------------------------------------------------
def import_torchvision() -> str | None:
    """Import torchvision, working around a wheel whose C operators do not load beside this torch.

    timm imports ``torchvision.ops.misc`` (pure Python) at import time, and ``vit_pytorch`` imports
    ``torchvision.transforms`` for its Dino trainer. The PyPI torchvision wheel
    is built against the CUDA torch, so with the local CPU torch its ``_C`` extension does not
    load and the import dies in the two modules that register fake/autograd kernels for
    ``torchvision::nms`` and friends. Those kernels are only needed by detection ops, which no
    model here uses, so the benchmark process (and only it) replaces those two modules with empty
    ones. Nothing on disk is changed. Returns a note when the workaround was applied.
    """
    try:
        importlib.import_module("torchvision")
        return None
    except ImportError:
        return None  # not installed: timm's own import will report it
    except RuntimeError as exc:
        if "does not exist" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules[name] = types.ModuleType(name)
    importlib.import_module("torchvision")
    return "torchvision C operators unavailable: skipped its operator registrations (not used here)"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Contestant:
    library: str
    model: nn.Module
    input_size: tuple[int, int, int]
    params: int
    results: dict[str, list[float]] = field(default_factory=dict)


def build_library_model(library: str, preset: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """Build ``preset`` in one library; raises LookupError when that library lacks it."""
    if library == "vitzoo":
        import vitzoo

        model = vitzoo.build(preset)
        return model, tuple(model.input_size)  # type: ignore[return-value]
    peer = PEERS.get(preset, {}).get(library)
    if peer is None:
        raise LookupError(f"no {library} constructor mapped for {preset!r}")
    if library == "timm":
        import_torchvision()
        import timm

        name, kwargs = (peer, {}) if isinstance(peer, str) else peer
        model = timm.create_model(name, pretrained=False, **kwargs)
        return model, tuple(model.pretrained_cfg["input_size"])  # type: ignore[return-value]
    import_torchvision()  # vit_pytorch/__init__ imports torchvision too (for Dino)
    module_name, class_name = peer[0].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    kwargs = peer[1]
    size = kwargs.get("image_size", 224)
    size = size if isinstance(size, (tuple, list)) else (size, size)
    return cls(**kwargs), (3, *size)


def gather_contestants(preset: str, libraries: list[str]) -> list[Contestant]:
    contestants = []
    for library in libraries:
        try:
            model, input_size = build_library_model(library, preset)
        except (ImportError, LookupError, KeyError) as exc:
            print(f"  skip {library}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            continue
        except Exception as exc:  # a registered-but-broken variant must not stop the others
            if library == "vitzoo" and "preset" in str(exc):
                print(f"  skip vitzoo: {preset!r} is not a registered preset yet")
            else:
                print(f"  skip {library}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            continue
        contestants.append(Contestant(library, model, input_size, count_params(model)))
    return contestants


# --------------------------------------------------------------------------------------------
# Timed workloads
# --------------------------------------------------------------------------------------------
class Workload:
    """One model in one mode (inference at a batch size, or a training step)."""

    def __init__(self, c: Contestant, args: argparse.Namespace, batch: int, train: bool) -> None:
        self.device = torch.device(args.device)
        self.amp = args.dtype == "bfloat16"
        self.train = train
        self.model = c.model.to(self.device).train(train)
        self.step_fn: Callable[..., Any] = self.model
        if args.compile:
            self.step_fn = torch.compile(self.model)
        self.x = torch.randn(batch, *c.input_size, device=self.device)
        self.y = torch.randint(0, 1000, (batch,), device=self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4) if train else None

    def __call__(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if not self.train:
                with torch.inference_mode():
                    self.step_fn(self.x)
                return
            loss = logits_loss(self.step_fn(self.x), self.y)
        loss.backward()
        assert self.optimizer is not None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def measure(
    contestants: list[Contestant], args: argparse.Namespace, name: str, batch: int, train: bool
) -> None:
    """Warm every library up, then time them interleaved; stores images/s per repetition.

    The method (warm-up, rotating order, per-repetition figures) is vitzoo's own
    :func:`vitzoo.bench.timing.interleaved`, the same that ``vitzoo bench`` uses.
    """
    workloads = {c.library: Workload(c, args, batch, train) for c in contestants}
    times = interleaved(
        workloads,
        repeats=args.repeats,
        iters=args.iters,
        warmup=args.warmup,
        device=args.device,
        clock=args.clock,
    )
    for c in contestants:
        c.results[name] = rates(times[c.library], batch)
        c.model.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------------------------
# Peak memory of a training step (fresh process per library, so high-water marks don't mix)
# --------------------------------------------------------------------------------------------
def memory_probe(args: argparse.Namespace) -> dict[str, float]:
    """Run in a child process: peak memory of one training step above the built model + input.

    On CPU the resident-set high-water mark is reset just before the step (``5`` written to
    /proc/self/clear_refs, Linux >= 4.0), so model construction does not mask the step's peak.
    """
    torch.set_num_threads(args.threads)
    (c,) = gather_contestants(args.model, [args.memory_probe])
    work = Workload(c, args, args.train_batch, train=True)
    peak = peak_memory_mib(work, args.device)
    if peak is None:
        raise OSError("peak memory needs Linux's /proc/self/status and clear_refs")
    return {"peak_mib": peak}


def measure_memory(contestants: list[Contestant], args: argparse.Namespace) -> dict[str, float]:
    peaks = {}
    for c in contestants:
        cmd = [sys.executable, __file__, "--_memory-probe", c.library, "--model", args.model]
        cmd += ["--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads)]
        cmd += ["--train-batch", str(args.train_batch)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            peaks[c.library] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
        except (IndexError, ValueError, KeyError):
            print(f"  memory probe failed for {c.library}: {done.stderr.strip()[-300:]}")
    return peaks


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def baseline_of(contestants: list[Contestant]) -> str:
    libs = [c.library for c in contestants]
    return next((lib for lib in ("timm", "vit-pytorch", "vitzoo") if lib in libs), libs[0])


def report(
    contestants: list[Contestant], args: argparse.Namespace, peaks: dict[str, float]
) -> dict[str, Any]:
    base = baseline_of(contestants)
    metrics = list(contestants[0].results)
    medians = {
        c.library: {m: statistics.median(c.results[m]) for m in metrics} for c in contestants
    }
    header = f"{'library':<12}" + "".join(f"{m:>24}" for m in metrics) + f"{'train peak MiB':>18}"
    unit = "images per CPU-second" if args.clock == "cpu" else "images/s"
    print(f"\n{unit} (median of {args.repeats}), ratio to {base} in brackets")
    print(header)
    for c in contestants:
        cells = []
        for m in metrics:
            value, ref = medians[c.library][m], medians[base][m]
            cells.append(f"{value:>14.2f} ({value / ref:5.2f}x)")
        peak = peaks.get(c.library)
        peak_cell = (
            f"{peak:>10.0f} ({peak / peaks[base]:4.2f}x)" if peak and peaks.get(base) else "n/a"
        )
        print(f"{c.library:<12}" + "".join(f"{cell:>24}" for cell in cells) + f"{peak_cell:>18}")
    spread = {
        c.library: {m: (min(c.results[m]), max(c.results[m])) for m in metrics} for c in contestants
    }
    return {
        "model": args.model,
        "baseline": base,
        "device": args.device,
        "dtype": args.dtype,
        "compile": args.compile,
        "threads": args.threads,
        "clock": args.clock,
        "repeats": args.repeats,
        "iters": args.iters,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "params": {c.library: c.params for c in contestants},
        "images_per_s_median": medians,
        "images_per_s_min_max": spread,
        "ratio_to_baseline": {
            c.library: {m: medians[c.library][m] / medians[base][m] for m in metrics}
            for c in contestants
        },
        "train_peak_mib": peaks,
        "memory_method": "cuda max_memory_allocated above the built model"
        if args.device == "cuda"
        else "VmHWM (reset before the step) minus VmRSS, fresh process per library",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="vit-s16", help=f"vitzoo preset; peers: {', '.join(PEERS)}")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions (median reported)")
    p.add_argument("--iters", type=int, default=2, help="calls per timed repetition")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per library and mode")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: images/s; cpu: images per CPU-second of this process (for shared machines)",
    )
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--batches", default="1,16", help="inference batch sizes")
    p.add_argument("--libraries", default=",".join(LIBRARIES))
    p.add_argument("--no-train", action="store_true", help="skip the training step")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--_memory-probe", dest="memory_probe", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return 0
    torch.set_num_threads(args.threads)
    # threads = the idle cores (benchmarks/README.md, "Threads"); say so when there are fewer
    busy = oversubscription(args.threads, what="these timings") if args.device == "cpu" else None
    if busy:
        print(f"warning: {busy}", file=sys.stderr)
    torch.manual_seed(0)
    print(
        f"model={args.model} device={args.device} dtype={args.dtype} compile={args.compile} "
        f"threads={args.threads} clock={args.clock} torch={torch.__version__}"
    )
    contestants = gather_contestants(args.model, args.libraries.split(","))
    if not contestants:
        print("nothing to measure")
        return 1
    for c in contestants:
        print(f"  {c.library:<12} params={c.params:>12,}  input={c.input_size}")
    reference = next((c for c in contestants if c.library == "vitzoo"), contestants[0])
    for c in contestants:
        if abs(c.params - reference.params) > 0.01 * reference.params:
            print(f"  WARNING: {c.library} differs from {reference.library} by more than 1% params")
    for batch in [int(b) for b in args.batches.split(",") if b]:
        print(f"measuring inference, batch {batch} ...", flush=True)
        measure(contestants, args, f"infer b{batch}", batch, train=False)
    if not args.no_train:
        print(f"measuring training step, batch {args.train_batch} ...", flush=True)
        measure(contestants, args, f"train b{args.train_batch}", args.train_batch, train=True)
    peaks = {} if args.no_memory or args.no_train else measure_memory(contestants, args)
    result = report(contestants, args, peaks)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
