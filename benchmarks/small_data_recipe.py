"""Validation accuracy of the default recipe vs the small-data recipe on the bundled digits.

    OMP_NUM_THREADS=1 python benchmarks/small_data_recipe.py --seeds 0 1 --out benchmarks/results

Both recipes train ``examples/digits.yaml`` (a 4-block ViT, 16x16 input) on scikit-learn's 8x8
handwritten digits (1,438 train / 359 val images, made by ``examples/make_digits_dataset.py``).
The default recipe is that file as shipped (random-resized crop, label smoothing, AdamW + cosine).
The small-data recipe adds, through ``--set``-style overrides only (the ``SMALL_DATA`` mapping):
RandAugment (2 ops at magnitude 6 of 30), colour jitter 0.2, random erasing p=0.25 and a weight EMA
(decay 0.99, warmed up). Each (recipe, seed) pair is one run; the seeds interleave the recipes so
load on the machine hits both alike. Reported: the best and the final validation accuracy
(of the EMA weights when there is one), the balanced accuracy of best.safetensors, and
wall-clock seconds. Accuracy is the point here, not speed: no timing claims are drawn.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "digits.yaml"

SMALL_DATA = {
    "data.auto_augment": "rand",
    "data.aug_ops": 2,
    "data.aug_magnitude": 6.0,
    "data.color_jitter": 0.2,
    "data.random_erasing": 0.25,
    "train.ema_decay": 0.99,
}
#: Ablations: the EMA and random erasing alone, and the full recipe given twice the epochs
#: (strong augmentation usually needs a longer schedule).
RECIPES = {
    "default": {},
    "small-data": SMALL_DATA,
    "ema+erasing": {"train.ema_decay": 0.99, "data.random_erasing": 0.25},
    "small-data-60ep": {**SMALL_DATA, "train.epochs": 60},
}


def make_digits(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "examples"))
    from make_digits_dataset import write_digits

    if not (folder / "train").is_dir():
        write_digits(folder)
    return folder


def run_one(recipe: str, seed: int, data: Path, out: Path, epochs: int | None) -> dict:
    from vitzoo.training.trainer import train

    overrides = {**RECIPES[recipe], "train.seed": seed}
    started = time.perf_counter()
    result = train(
        SPEC,
        data,
        epochs=epochs,
        out=out / f"{recipe.replace('+', '-')}-seed{seed}",
        overrides=overrides,
    )
    seconds = time.perf_counter() - started
    accuracies = [row["val_accuracy"] for row in result.history]
    return {
        "recipe": recipe,
        "seed": seed,
        "epochs": len(result.history),
        "best_val_accuracy": max(accuracies),
        "final_val_accuracy": accuracies[-1],
        "best_balanced_accuracy": result.report["balanced_accuracy"] if result.report else None,
        "seconds": round(seconds, 1),
    }


def summarise(rows: list[dict]) -> str:
    lines = [
        "| recipe | runs | best val acc (median, min-max) | final val acc (median) | "
        "balanced acc of best (median) | s per run (median) |",
        "|---|---|---|---|---|---|",
    ]
    for recipe in RECIPES:
        mine = [r for r in rows if r["recipe"] == recipe]
        if not mine:
            continue
        best = [r["best_val_accuracy"] for r in mine]
        final = [r["final_val_accuracy"] for r in mine]
        balanced = [r["best_balanced_accuracy"] for r in mine]
        seconds = [r["seconds"] for r in mine]
        lines.append(
            f"| {recipe} | {len(mine)} | {statistics.median(best):.2%} "
            f"({min(best):.2%}-{max(best):.2%}) | {statistics.median(final):.2%} | "
            f"{statistics.median(balanced):.2%} | {statistics.median(seconds):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None, help="default: the spec's 30")
    parser.add_argument("--data", type=Path, default=None, help="digits folder (made if absent)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--recipes", nargs="+", default=["default", "small-data"], choices=list(RECIPES)
    )
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_digits(args.data or Path(tmp) / "digits")
        runs = Path(tmp) / "runs"
        rows = []
        for seed in args.seeds:
            for recipe in args.recipes:
                row = run_one(recipe, seed, data, runs, args.epochs)
                print(json.dumps(row), flush=True)
                rows.append(row)
    name = f"small_data_recipe{args.tag}"
    (args.out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = summarise(rows)
    (args.out / f"{name}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
