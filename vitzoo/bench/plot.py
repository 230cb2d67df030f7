"""``vitzoo bench --plot out.png``: achieved GFLOP/s per workload against the matmul rate.

Drawn with Pillow (already a dependency) rather than matplotlib, so plotting adds no install:
one bar per (mode, batch) with its min-max whisker, and a dashed line at the machine's matmul
rate, the roofline the bars are read against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 720, 420, 60


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the chart of a :func:`vitzoo.bench.runner.bench_model` report as a PNG."""
    results = report["results"]
    matmul = report["matmul"]
    roof = matmul["gflops_per_s"]["median"] if matmul else 0.0

    def gflops(r: dict[str, Any], key: str) -> float:
        return r["images_per_s"][key] * r["flops_per_image"] / 1e9

    top = max([roof, *(gflops(r, "max") for r in results)], default=1.0) * 1.15 or 1.0
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    plot_h = HEIGHT - 2 * MARGIN

    def y_of(value: float) -> float:
        return HEIGHT - MARGIN - plot_h * value / top

    draw.line([(MARGIN, MARGIN), (MARGIN, HEIGHT - MARGIN)], fill="black")
    draw.line([(MARGIN, HEIGHT - MARGIN), (WIDTH - MARGIN, HEIGHT - MARGIN)], fill="black")
    for i in range(5):
        value = top * i / 4
        draw.text((4, y_of(value) - 6), f"{value:.0f}", fill="black")
    draw.text(
        (MARGIN, 10),
        f"{report['model']}: GFLOP/s ({report['precision']}, "
        f"{report['runtime']}, {report['device']})",
        fill="black",
    )
    if roof:
        x = MARGIN
        while x < WIDTH - MARGIN:
            draw.line([(x, y_of(roof)), (min(x + 8, WIDTH - MARGIN), y_of(roof))], fill="red")
            x += 14
        draw.text((WIDTH - MARGIN - 200, y_of(roof) - 14), f"matmul {matmul['shape']}", fill="red")
    slot = (WIDTH - 2 * MARGIN) / max(len(results), 1)
    for i, r in enumerate(results):
        left = MARGIN + i * slot + slot * 0.2
        right = MARGIN + (i + 1) * slot - slot * 0.2
        draw.rectangle([left, y_of(gflops(r, "median")), right, HEIGHT - MARGIN], fill="steelblue")
        mid = (left + right) / 2
        draw.line([(mid, y_of(gflops(r, "min"))), (mid, y_of(gflops(r, "max")))], fill="black")
        label = f"{r['mode']} b{r['batch']}"
        if r["matmul_fraction"] is not None:
            label += f" {r['matmul_fraction']:.0%}"
        draw.text((left, HEIGHT - MARGIN + 8), label, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
