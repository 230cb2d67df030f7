"""Run ``compare_peers.py`` for every variant that a peer library also implements; print one table.

Each model is measured in its own interleaved run (one process per model, so a slow model does not
share warm caches with the next); the table reports vitzoo's images/s as a ratio to each peer::

    OMP_NUM_THREADS=1 python benchmarks/variant_table.py --out /tmp/variants \
        -- --threads 1 --clock cpu --repeats 3 --warmup 1 --iters 1 --no-memory

Arguments after ``--`` go to ``compare_peers.py`` unchanged. ``--tables-only`` rebuilds the table
from the JSON files already in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

MODELS = [
    "deit-s-distilled",
    "cait-xxs24",
    "xcit-t12",
    "t2t-vit-14",
    "crossvit-ti",
    "pit-ti",
    "levit-128s",
    "cvt-13",
    "twins-svt-s",
    "maxvit-t",
    "nest-t",
    "mobilevit-xs",
]
COLUMNS = ("infer b1", "infer b16", "train b16")


def run(models: list[str], out: Path, extra: list[str]) -> None:
    script = Path(__file__).with_name("compare_peers.py")
    out.mkdir(parents=True, exist_ok=True)
    for model in models:
        print(f"--- {model}", file=sys.stderr, flush=True)
        cmd = [
            sys.executable,
            str(script),
            "--model",
            model,
            "--json",
            str(out / f"{model}.json"),
            *extra,
        ]
        subprocess.run(cmd, check=False)


def ratio_cells(result: dict, peer: str) -> list[str]:
    ours, theirs = result["images_per_s_median"]["vitzoo"], result["images_per_s_median"].get(peer)
    if theirs is None:
        return ["-"] * len(COLUMNS)
    return [f"{ours[c] / theirs[c]:.2f}x" for c in COLUMNS]


def table(models: list[str], out: Path) -> str:
    lines = [
        "| model | params vitzoo / timm / vit-pytorch | vs timm: "
        + " / ".join(COLUMNS)
        + " | vs vit-pytorch: "
        + " / ".join(COLUMNS)
        + " |",
        "| --- | --- | --- | --- |",
    ]
    for model in models:
        path = out / f"{model}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        params = result["params"]
        counts = " / ".join(
            f"{params[lib] / 1e6:.2f}M" if lib in params else "-"
            for lib in ("vitzoo", "timm", "vit-pytorch")
        )
        lines.append(
            f"| {model} | {counts} | {' / '.join(ratio_cells(result, 'timm'))} "
            f"| {' / '.join(ratio_cells(result, 'vit-pytorch'))} |"
        )
    return "\n".join(lines)


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("variant-bench"))
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--tables-only", action="store_true")
    args = parser.parse_args(own)
    if not args.tables_only:
        run(args.models, args.out, extra)
    print(table(args.models, args.out))


if __name__ == "__main__":
    main()
