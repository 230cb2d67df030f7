"""How attention cost grows with the token count: SDPA softmax attention vs linear attention.

Builds each registered attention through the registry (so it measures exactly what models use) and
times forward + backward for growing sequence lengths. Softmax attention is O(N^2); the Nyström
(O(N * landmarks)), Performer (O(N * features)) and Linformer (O(N * proj_len)) approximations are
linear, so their time ratio to SDPA should fall as N grows. Linformer's projections are sized by
the sequence length, so it is rebuilt for each N.

    OMP_NUM_THREADS=1 python benchmarks/attention_scaling.py --tokens 256 512 1024 2048
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

import vitzoo
from vitzoo.components.context import BuildContext
from vitzoo.spec import resolved_config


def build_attention(
    kind: str, dim: int, heads: int, tokens: int = 0, **options: object
) -> torch.nn.Module:
    registry = vitzoo.get_registry()
    config = resolved_config(registry, "attention", kind)(**options)
    grid = (tokens,) if tokens else ()
    ctx = BuildContext(registry=registry, dim=dim, num_heads=heads, grid=grid)
    return ctx.build("attention", config)


def time_once(module: torch.nn.Module, x: torch.Tensor, backward: bool, repeats: int) -> float:
    """Median seconds of one forward (+ backward) pass."""
    times = []
    for _ in range(repeats + 1):  # the first run warms up allocators and kernels
        inp = x.detach().requires_grad_(backward)
        start = time.perf_counter()
        out = module(inp)
        if backward:
            out.sum().backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--landmarks", type=int, default=32)
    parser.add_argument("--features", type=int, default=64, help="Performer random features")
    parser.add_argument("--proj-len", type=int, default=64, help="Linformer projected length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--forward-only", action="store_true")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    candidates = {
        "mhsa (SDPA)": build_attention("mhsa", args.dim, args.heads),
        "nystrom": build_attention(
            "nystrom", args.dim, args.heads, landmarks=args.landmarks, residual_conv_kernel=None
        ),
        "performer": build_attention("performer", args.dim, args.heads, num_features=args.features),
        "linformer": None,  # built per sequence length below
    }
    mode = "forward" if args.forward_only else "forward+backward"
    print(
        f"{mode} ms, batch {args.batch}, dim {args.dim}, heads {args.heads}, "
        f"landmarks {args.landmarks}, performer features {args.features}, linformer k "
        f"{args.proj_len}, torch threads {torch.get_num_threads()}"
    )
    linear = [name for name in candidates if not name.startswith("mhsa")]
    ratios = " ".join(f"{name + '/sdpa':>15}" for name in linear)
    print(f"{'tokens':>7} " + " ".join(f"{n:>12}" for n in candidates) + " " + ratios)
    base_times: dict[str, float] = {}
    for n in args.tokens:
        x = torch.randn(args.batch, n, args.dim)
        candidates["linformer"] = build_attention(
            "linformer", args.dim, args.heads, tokens=n, proj_len=args.proj_len
        )
        row = {
            name: time_once(m, x, not args.forward_only, args.repeats) * 1e3
            for name, m in candidates.items()
        }
        if not base_times:
            base_times = dict(row)
        cells = " ".join(f"{row[name]:>12.2f}" for name in candidates)
        cells += " " + " ".join(f"{row[name] / row['mhsa (SDPA)']:>15.2f}" for name in linear)
        print(f"{n:>7} {cells}")
    print(
        "growth from the smallest N:",
        ", ".join(f"{name} x{row[name] / base_times[name]:.1f}" for name in candidates),
    )


if __name__ == "__main__":
    main()
