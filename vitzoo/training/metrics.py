"""Per-epoch metrics to CSV and JSON, and a PNG of the loss and accuracy curves.

The plot is drawn with Pillow (already a dependency) rather than adding matplotlib for two
line charts.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

COLOURS = {"train": (31, 119, 180), "val": (255, 127, 14)}


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


def _series(history: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    out = []
    for row in history:
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out.append((float(row["epoch"]), float(value)))
    return out


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    lines: dict[str, list[tuple[float, float]]],
    font: ImageFont.ImageFont,
) -> None:
    left, top, right, bottom = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((left, top - 14), title, fill=(0, 0, 0), font=font)
    points = [p for series in lines.values() for p in series]
    if not points:
        draw.text((left + 8, top + 8), "no data", fill=(90, 90, 90), font=font)
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 6

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + pad + (x - x0) / (x1 - x0) * (right - left - 2 * pad)
        py = bottom - pad - (y - y0) / (y1 - y0) * (bottom - top - 2 * pad)
        return px, py

    for frac in (0.0, 0.5, 1.0):
        value = y0 + frac * (y1 - y0)
        _, py = to_px(x0, value)
        draw.line([(left, py), (right, py)], fill=(225, 225, 225))
        draw.text((right + 4, py - 5), f"{value:.3g}", fill=(60, 60, 60), font=font)
    draw.text((left, bottom + 3), f"epoch {x0:g}", fill=(60, 60, 60), font=font)
    draw.text((right - 50, bottom + 3), f"epoch {x1:g}", fill=(60, 60, 60), font=font)
    for i, (name, series) in enumerate(lines.items()):
        colour = COLOURS.get(name, (44, 160, 44))
        pts = [to_px(x, y) for x, y in series]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for px, py in pts:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((right - 90 + 45 * i, top - 14), name, fill=colour, font=font)


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Two panels: train/val loss and train/val accuracy, per epoch."""
    width, height = 760, 300
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    _panel(
        draw,
        (30, 30, 330, 260),
        "loss",
        {"train": _series(history, "train_loss"), "val": _series(history, "val_loss")},
        font,
    )
    _panel(
        draw,
        (410, 30, 710, 260),
        "accuracy",
        {"train": _series(history, "train_accuracy"), "val": _series(history, "val_accuracy")},
        font,
    )
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
