"""Per-epoch metrics to CSV and JSON, and a PNG of the curves (drawn by
:mod:`vitzoo.training.plots`: matplotlib when installed, Pillow otherwise)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_metrics(run_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    """``metrics.csv`` (one row per epoch, union of columns) and ``metrics.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(run_dir / "metrics.json", json.dumps(list(history), indent=2) + "\n")
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    tmp = run_dir / ".metrics.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, run_dir / "metrics.csv")


def plot_curves(
    history: Sequence[dict[str, Any]], path: Path, metric: str = "val_accuracy"
) -> None:
    """Loss, accuracy and learning-rate panels per epoch (see :mod:`vitzoo.training.plots`),
    the best epoch by ``metric`` marked."""
    from vitzoo.training.plots import plot_curves as draw

    draw(history, path, metric)
