"""How long a linear probe takes against fine-tuning, on the same data and backbone.

One generated two-class folder (``--per-class`` training and half as many validation JPEGs per
class, 256x256, a red or a blue cast on smooth noise: separable by any backbone), one backbone
(``--preset``, random weights: the times do not depend on them; with released weights use
``PRESET.TAG``), and three recipes timed end to end, data loading included:

* ``vitzoo probe``: embed train + val once, fit the logistic regression over its grid of
  regularisation strengths, score the k-NN, write the checkpoint;
* ``vitzoo train`` with ``train.freeze: 2`` (the last two blocks, the final norm and the head);
* ``vitzoo train`` of the whole model.

Both fine-tunes run ``--epochs`` epochs at batch ``--batch`` with the training augmentation on
(every epoch sees new crops, so nothing could be cached). Accuracies are printed for the record;
on this easy synthetic data all three separate the classes.

    python benchmarks/probe_vs_finetune.py --preset vit-s16 --per-class 100 --epochs 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

import vitzoo
from vitzoo.training.embeddings import embed_folder
from vitzoo.training.probe import fit, save_probe
from vitzoo.training.trainer import train


def make_folder(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", max(2, per_class // 2))):
        for label, name in enumerate(("female", "male")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                small = rng.integers(0, 140, size=(16, 16, 3)).astype(np.uint8)
                small[..., 0 if label == 0 else 2] += 100
                image = Image.fromarray(small).resize((256, 256), Image.BICUBIC)
                image.save(folder / f"{i:04d}.jpg", quality=90)


def run_probe(ckpt: Path, data: Path, workers: int, out: Path) -> dict:
    started = time.perf_counter()
    model = vitzoo.load(ckpt)
    embedded, extractor = embed_folder(model, data, source=str(ckpt), num_workers=workers)
    classifier, report = fit(embedded)
    save_probe(extractor, classifier, report, out)
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "val_accuracy": report.val_accuracy,
        "knn_accuracy": report.knn_accuracy,
        "steps": report.seconds,
    }


def run_train(ckpt: Path, data: Path, args: argparse.Namespace, freeze: object, out: Path) -> dict:
    spec = {
        "preset": args.preset,
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch,
            "lr": 1e-4,
            "warmup_epochs": 0.5,
            "init_from": str(ckpt),
            "freeze": freeze,
            "log_every": 1000,
        },
        "data": {"num_workers": args.workers},
    }
    started = time.perf_counter()
    result = train(spec, data, out=out, console=Console(file=io.StringIO()))
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "val_accuracy": result.final.get("val_accuracy"),
        "trained_parameters": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit-s16")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root / "data", args.per_class)
        ckpt = root / "backbone.safetensors"
        torch.manual_seed(0)
        vitzoo.save(vitzoo.build(args.preset, num_classes=2), ckpt)
        result = {
            "preset": args.preset,
            "train_images": 2 * args.per_class,
            "val_images": 2 * max(2, args.per_class // 2),
            "epochs": args.epochs,
            "batch": args.batch,
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "probe": run_probe(ckpt, root / "data", args.workers, root / "probe.safetensors"),
            "freeze_2": run_train(ckpt, root / "data", args, 2, root / "partial"),
            "full": run_train(ckpt, root / "data", args, "none", root / "full"),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
