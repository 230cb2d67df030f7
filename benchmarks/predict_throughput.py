"""Is the data pipeline the bottleneck of ``vitzoo predict`` over a folder of JPEGs?

Compares, for one model and batch size, the images/s of ``vitzoo predict CKPT FOLDER --output
preds.csv`` (decoding, resizing, normalising in data-loader workers, the model, the CSV rows)
with ``vitzoo bench CKPT --batch B`` (the model alone on tensors already in memory). The two are
measured alternately, ``--repeats`` times, and the medians compared, so load drifting on a shared
machine touches both alike. The folder holds ``--images`` photo-sized JPEGs (``--size``,
default 640x480, quality 90) of smooth random content; weights are random (speed does not depend
on them).

    python benchmarks/predict_throughput.py --preset vit-s16 --batch 32 --images 256
    python benchmarks/predict_throughput.py --json > benchmarks/results/predict_throughput.json

The report states the machine's core count and the worker count used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitzoo
from vitzoo.bench.runner import BenchOptions, bench_model
from vitzoo.training.inference import load_classifier
from vitzoo.training.prediction import PredictOptions, collect_inputs, predict_rows
from vitzoo.training.prediction_files import PredictionFile


def make_jpegs(folder: Path, count: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    width, height = size
    for i in range(count):
        small = rng.integers(0, 255, size=(height // 16, width // 16, 3)).astype(np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        (folder / f"{i // 100:03d}").mkdir(exist_ok=True)
        image.save(folder / f"{i // 100:03d}" / f"{i:05d}.jpg", quality=90)


def predict_rate(ckpt: Path, folder: Path, batch: int, workers: int, out: Path) -> float:
    """Images/s of the predict engine writing CSV rows (the model already loaded, as the
    command's own rate line reports)."""
    model, classes, data = load_classifier(ckpt)
    paths = collect_inputs([folder])
    sink = PredictionFile(out, min(5, len(classes)))
    options = PredictOptions(top_k=5, batch_size=batch, num_workers=workers)
    started = time.perf_counter()
    rows: list[dict] = []
    for row in predict_rows(model, classes, data, paths, options):
        rows.append(row)
        if len(rows) == batch:
            sink.write(rows)
            rows = []
    sink.write(rows)
    sink.close()
    return len(paths) / (time.perf_counter() - started)


def bench_rate(ckpt: Path, batch: int, iters: int) -> float:
    model = vitzoo.load(ckpt)
    report = bench_model(model, BenchOptions(batches=(batch,), repeats=1, iters=iters, warmup=1))
    return report["results"][0]["images_per_s"]["median"]


def cli_rate(ckpt: Path, folder: Path, batch: int, workers: int, out: Path) -> str:
    """The rate line ``vitzoo predict --output`` prints itself: a fresh process, its data
    loader's workers started, every row written (what a user sees)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vitzoo",
            "predict",
            str(ckpt),
            str(folder),
            "--output",
            str(out),
            "--overwrite",
            "--batch-size",
            str(batch),
            "--workers",
            str(workers),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return (done.stderr.strip().splitlines() or ["?"])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit-s16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "photos"
        folder.mkdir()
        make_jpegs(folder, args.images, size)
        ckpt = root / "model.safetensors"
        vitzoo.save(vitzoo.build(args.preset, num_classes=2), ckpt)
        iters = max(1, args.images // args.batch)
        predicted, benched, commanded = [], [], []
        for _ in range(args.repeats):
            benched.append(bench_rate(ckpt, args.batch, iters))
            predicted.append(predict_rate(ckpt, folder, args.batch, args.workers, root / "p.csv"))
            line = cli_rate(ckpt, folder, args.batch, args.workers, root / "cli.csv")
            commanded.append(float(line.rsplit(";", 1)[-1].split()[0]))
    result = {
        "preset": args.preset,
        "batch": args.batch,
        "images": args.images,
        "jpeg_size": list(size),
        "workers": args.workers,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bench_images_per_s": [round(v, 2) for v in benched],
        "predict_images_per_s": [round(v, 2) for v in predicted],
        "predict_over_bench": round(statistics.median(predicted) / statistics.median(benched), 3),
        "command_images_per_s": commanded,
        "command_over_bench": round(statistics.median(commanded) / statistics.median(benched), 3),
        "load_average": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{args.preset} batch {args.batch}, {args.images} JPEGs {size[0]}x{size[1]}, "
        f"{args.workers} workers, {os.cpu_count()} cores: vitzoo bench "
        f"{statistics.median(benched):.1f} img/s, predict over the folder "
        f"{statistics.median(predicted):.1f} img/s "
        f"(ratio {result['predict_over_bench']:.3f}); the command's own rate line "
        f"{statistics.median(commanded):.1f} img/s (ratio {result['command_over_bench']:.3f})"
    )


if __name__ == "__main__":
    main()
