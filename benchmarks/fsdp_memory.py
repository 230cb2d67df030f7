"""Per-rank memory and step time of data-parallel training: DDP against FSDP (FSDP2).

    python benchmarks/fsdp_memory.py --world 2 --dim 1024 --depth 4 --json out.json

For each strategy, ``--world`` fresh processes (gloo on CPU, NCCL with ``--device cuda``) build
the same model from the same spec and seed, wrap it the way ``vitzoo train`` does
(``DistributedDataParallel``, or :meth:`vitzoo.training.sharding.Sharding.shard` on the
supervised objective: every block its own group, the objective the root), make the run's AdamW
(:func:`vitzoo.training.optim.make_optimizer`) and train on random images.

What each rank reports (the table shows the worst rank, the JSON every rank):

* ``state MiB``: the bytes this rank holds for training state after a step -- parameters,
  gradients (the DDP gradient buckets too) and AdamW's two moments; the part FSDP divides by
  N (DDP: ~20 bytes per parameter, its gradient buckets included; FSDP: ~16/N);
* ``peak MiB``: the resident-set high-water mark while training (CPU: ``VmHWM`` reset after the
  warm-up step through ``/proc/self/clear_refs``, so it covers the steady-state steps;
  CUDA: ``max_memory_allocated``), minus the process's memory before the model was built --
  what training this model costs the rank, activations and gathered blocks included;
* ``build peak MiB``: the high-water mark of the whole process above the same baseline, model
  construction included (every rank builds the full fp32 model once before sharding it);
* ``step s``: the median wall time of a training step (forward, backward, reduction, AdamW).

The ranks run with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed (``--mmap-threshold``, 64 KiB):
by default glibc raises that threshold after the first large free, and later tensors of up to
32 MiB then come from a heap it never gives back, so the resident set would count freed
gathered blocks as held. With it fixed, every tensor of a block is mapped and unmapped and the
resident set follows the memory actually live.

The ratio FSDP/DDP of ``peak`` is the figure to read: on paper the sharded state is 1/N of the
replicated one, and what remains is what is not sharded (activations, one block's gathered
parameters and gradients at a time, the root's).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vitzoo.bench.timing import proc_status_mib

SPEC: dict[str, Any] = {
    "model": {
        "type": "vit",
        "image_size": 64,
        "num_classes": 10,
        "patch": {"type": "linear", "patch_size": 16},
    },
    "train": {"lr": 1e-4, "weight_decay": 0.05},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensor_mib(tensors: Any) -> float:
    """MiB of the local storage of ``tensors`` (a shard's, for a DTensor)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        if t is None:
            continue
        local = t.to_local() if isinstance(t, DTensor) else t
        total += local.numel() * local.element_size()
    return total / 2**20


def training_state_mib(
    objective: nn.Module, optimizer: torch.optim.Optimizer, runner: Any
) -> float:
    params = list(objective.parameters())
    grads = [p.grad for p in params]
    moments = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    buckets = 0.0
    if isinstance(runner, nn.parallel.DistributedDataParallel):
        # DDP reduces gradients through flat buckets the size of all gradients
        buckets = tensor_mib(p for p in params if p.requires_grad)
    return tensor_mib(params) + tensor_mib(grads) + tensor_mib(moments) + buckets


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return proc_status_mib("VmHWM")


def join_group(rank: int, world: int, port: int, args: argparse.Namespace) -> torch.device:
    """This rank's device, its threads set and the process group joined."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    device = torch.device(f"cuda:{rank}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world
    )
    return device


def placed(spec: Any, model: nn.Module, info: Any, device: torch.device) -> tuple[Any, Any]:
    """(the objective, what a step calls): replicated under DDP, or sharded as train() does."""
    from vitzoo.training.objective import make_objective
    from vitzoo.training.sharding import make_sharding, move_unsharded

    objective = make_objective(spec, model, None)
    sharding = make_sharding(spec.train, info)
    if sharding is None:
        objective.to(device)
        runner: Any = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
        return objective, runner
    sharding.shard(objective)
    move_unsharded(objective, device)
    return objective, objective


def rank_main(
    rank: int, world: int, port: int, strategy: str, args: argparse.Namespace, queue: Any
) -> None:
    device = join_group(rank, world, port, args)
    from vitzoo.builder import build_from_spec, resolve_spec
    from vitzoo.training.distributed import DistInfo
    from vitzoo.training.optim import make_optimizer

    spec = resolve_spec(
        SPEC,
        {
            "model.dim": args.dim,
            "model.depth": args.depth,
            "model.num_heads": args.dim // 64,
            "train.strategy": strategy,
            "train.precision": args.precision,
        },
    )
    baseline = (
        torch.cuda.memory_allocated(device) / 2**20
        if device.type == "cuda"
        else proc_status_mib("VmRSS")
    )
    torch.manual_seed(0)
    model = build_from_spec(spec)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    objective, runner = placed(spec, model, DistInfo(rank, world, rank, device, False), device)
    optimizer = make_optimizer(objective, model, spec.train)
    generator = torch.Generator().manual_seed(rank)
    local = args.batch // world
    images = torch.rand(local, 3, 64, 64, generator=generator).to(device)
    targets = torch.randint(0, 10, (local,), generator=generator).to(device)

    def step() -> float:
        started = time.perf_counter()
        dtype = {"bf16": torch.bfloat16, "fp32": None}[args.precision]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = runner(images, targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep gradients allocated, as in a long run
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.barrier()
        return time.perf_counter() - started

    step()  # allocates gradients and AdamW's moments
    build_peak = peak_mib(device) - baseline
    state = training_state_mib(objective, optimizer, runner)
    reset_peak(device)
    times = [step() for _ in range(args.steps)]
    queue.put(
        {
            "strategy": strategy,
            "rank": rank,
            "params_m": round(params, 2),
            "state_mib": round(state, 1),
            "peak_mib": round(peak_mib(device) - baseline, 1),
            "build_peak_mib": round(build_peak, 1),
            "step_s": round(statistics.median(times), 4),
        }
    )
    dist.destroy_process_group()


def measure(strategy: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.mmap_threshold:  # read by glibc when each spawned rank starts
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    processes = [
        ctx.Process(target=rank_main, args=(r, args.world, port, strategy, args, queue))
        for r in range(args.world)
    ]
    for p in processes:
        p.start()
    rows = [queue.get(timeout=1800) for _ in processes]
    for p in processes:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"{strategy}: a rank exited with status {p.exitcode}")
    return sorted(rows, key=lambda r: r["rank"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="global batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=65536,
        help="glibc MALLOC_MMAP_THRESHOLD_ for the ranks (0: glibc's dynamic default)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = {s: measure(s, args) for s in ("ddp", "fsdp")}
    params = results["ddp"][0]["params_m"]
    print(
        f"ViT dim {args.dim} depth {args.depth} ({params:.1f} M parameters), {args.world} ranks, "
        f"{args.device}, {args.precision}, global batch {args.batch}; worst rank per column"
    )
    print(f"{'':6} {'state MiB':>10} {'peak MiB':>10} {'build peak MiB':>15} {'step s':>8}")
    worst = {}
    for strategy, rows in results.items():
        worst[strategy] = {
            k: max(r[k] for r in rows)
            for k in ("state_mib", "peak_mib", "build_peak_mib", "step_s")
        }
        w = worst[strategy]
        print(
            f"{strategy:6} {w['state_mib']:10.1f} {w['peak_mib']:10.1f} "
            f"{w['build_peak_mib']:15.1f} {w['step_s']:8.3f}"
        )
    ratios = {k: round(worst["fsdp"][k] / worst["ddp"][k], 3) for k in worst["ddp"]}
    print(
        "fsdp/ddp  "
        + ", ".join(
            f"{k.removesuffix('_mib').removesuffix('_s')} {v:.2f}" for k, v in ratios.items()
        )
        + f"  (1/N = {1 / args.world:.2f})"
    )
    if args.json is not None:
        report = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "params_m": params,
            "ranks": results,
            "worst": worst,
            "fsdp_over_ddp": ratios,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
