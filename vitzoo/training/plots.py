"""``curves.png``: loss, accuracy and learning rate per epoch, with the best epoch marked.

Drawn with matplotlib when it is installed (the optional ``plot`` extra), else with Pillow
(already a dependency) following the same layout: three panels side by side (loss, accuracy,
learning rate), titled axes, ticks at round values, integer epochs on the x axis, and a dashed
line at the epoch whose checkpoint is ``best.safetensors``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

TRAIN, VAL, LR, BEST = (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)
SERIES = (
    ("loss", "loss", (("train", "train_loss", TRAIN), ("validation", "val_loss", VAL))),
    (
        "accuracy",
        "accuracy",
        (("train", "train_accuracy", TRAIN), ("validation", "val_accuracy", VAL)),
    ),
    ("learning rate", "learning rate (end of epoch)", (("lr", "lr", LR),)),
)


def series(history: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    out = []
    for row in history:
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out.append((float(row["epoch"]), float(value)))
    return out


def best_epoch(history: Sequence[dict[str, Any]], metric: str = "val_accuracy") -> int | None:
    """The epoch the trainer kept as best (the trainer's own rule:
    :func:`vitzoo.training.evaluation.best_epoch`)."""
    from vitzoo.training.evaluation import best_epoch as trainers_best

    return trainers_best(history, metric)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 x 10^k) covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        low, high = low - 0.5 * (abs(low) or 1.0), high + 0.5 * (abs(high) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks, value = [], start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def epoch_ticks(last: int, count: int = 8) -> list[int]:
    step = max(1, math.ceil(last / count))
    for nice in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500):
        if nice >= step:
            step = nice
            break
    ticks = list(range(step, last + 1, step)) if step > 1 else list(range(1, last + 1))
    if 1 not in ticks:
        ticks.insert(0, 1)
    return ticks


def tick_label(value: float, step: float) -> str:
    """Enough decimals to tell neighbouring ticks apart; scientific for tiny/huge values."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        return f"{value:.1e}"
    exponent = math.floor(math.log10(step))
    mantissa = round(step / 10**exponent, 6)
    decimals = max(0, -exponent + (1 if mantissa == 2.5 else 0))
    return f"{value:.{decimals}f}"


def plot_curves(
    history: Sequence[dict[str, Any]], path: Path, metric: str = "val_accuracy"
) -> Path:
    """Write ``path`` (PNG) atomically; matplotlib when importable, else Pillow. The best
    epoch is marked as ``train.best_metric`` (``metric``) chose it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        import matplotlib
    except ImportError:
        draw_with_pillow(history, tmp, metric)
    else:
        matplotlib.use("Agg", force=False)
        draw_with_matplotlib(history, tmp, metric)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# matplotlib
# --------------------------------------------------------------------------------------------
def draw_with_matplotlib(
    history: Sequence[dict[str, Any]], path: Path, metric: str = "val_accuracy"
) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    best = best_epoch(history, metric)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), dpi=100)
    for ax, (title, ylabel, lines) in zip(axes, SERIES, strict=True):
        drawn = False
        for label, key, colour in lines:
            points = series(history, key)
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", ms=3, color=[c / 255 for c in colour], label=label)
            drawn = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
        ax.grid(True, alpha=0.3)
        if title == "accuracy":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if best is not None and drawn:
            ax.axvline(
                best, color=[c / 255 for c in BEST], ls="--", lw=1, label=f"best (epoch {best})"
            )
        if drawn:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("training curves")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Pillow fallback
# --------------------------------------------------------------------------------------------
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def draw_with_pillow(
    history: Sequence[dict[str, Any]], path: Path, metric: str = "val_accuracy"
) -> None:
    width, height = 1380, 440
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font, small = _font(15), _font(12)
    draw.text((width // 2 - 60, 8), "training curves", fill=(0, 0, 0), font=_font(17))
    best = best_epoch(history, metric)
    last = max((int(r["epoch"]) for r in history), default=1)
    panel_w = (width - 60) // 3
    for i, (title, ylabel, lines) in enumerate(SERIES):
        left = 30 + i * panel_w + 70
        box = (left, 60, left + panel_w - 110, height - 70)
        _panel(img, draw, box, title, ylabel, lines, history, best, last, font, small)
    img.save(path, format="PNG")


@dataclass(frozen=True)
class _Axes:
    """A panel's plotting box and the data range it shows."""

    box: tuple[int, int, int, int]
    x0: float
    x1: float
    y0: float
    y1: float

    def px(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        return (
            left + (x - self.x0) / (self.x1 - self.x0) * (right - left),
            bottom - (y - self.y0) / ((self.y1 - self.y0) or 1.0) * (bottom - top),
        )


def _panel(
    img: Image.Image,
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    ylabel: str,
    lines: Sequence[tuple[str, str, tuple[int, int, int]]],
    history: Sequence[dict[str, Any]],
    best: int | None,
    last: int,
    font: ImageFont.ImageFont,
    small: ImageFont.ImageFont,
) -> None:
    left, top, right, bottom = box
    draw.text(((left + right) // 2 - 4 * len(title), top - 28), title, fill=(0, 0, 0), font=font)
    data = {label: (series(history, key), colour) for label, key, colour in lines}
    values = [y for points, _ in data.values() for _, y in points]
    draw.text(((left + right) // 2 - 18, bottom + 26), "epoch", fill=(0, 0, 0), font=small)
    if not values:
        draw.rectangle(box, outline=(0, 0, 0))
        _vertical_text(img, ylabel, (left - 40, (top + bottom) // 2), small)
        draw.text((left + 10, top + 10), "no data", fill=(90, 90, 90), font=small)
        return
    yticks = nice_ticks(min(values), max(values))
    axes = _Axes(box, 0.5, last + 0.5, yticks[0], yticks[-1])
    _y_axis(img, draw, axes, yticks, title == "accuracy", ylabel, small)
    _x_axis(draw, axes, last, small)
    if best is not None:
        x, _ = axes.px(best, axes.y0)
        for y in range(top, bottom, 8):
            draw.line([(x, y), (x, min(y + 4, bottom))], fill=BEST, width=1)
    all_pts = _draw_series(draw, axes, data.values())
    draw.rectangle(box, outline=(0, 0, 0))
    entries = [(label, colour, 3) for label, (points, colour) in data.items() if points]
    if best is not None:
        entries.append((f"best (epoch {best})", BEST, 1))
    _legend(draw, box, entries, all_pts, small)


def _y_axis(
    img: Image.Image,
    draw: ImageDraw.ImageDraw,
    axes: _Axes,
    yticks: Sequence[float],
    percent: bool,
    ylabel: str,
    small: ImageFont.ImageFont,
) -> None:
    """Grid lines and tick labels (percent, scientific or plain), then the rotated label."""
    left, top, right, bottom = axes.box
    step = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
    scientific = max(abs(v) for v in yticks) < 1e-2
    widest = 0
    for value in yticks:
        _, y = axes.px(axes.x0, value)
        draw.line([(left, y), (right, y)], fill=(232, 232, 232))
        draw.line([(left - 4, y), (left, y)], fill=(0, 0, 0))
        if percent and step >= 0.01:
            label = f"{value:.0%}"
        elif scientific:
            label = "0" if value == 0 else f"{value:.1e}"
        else:
            label = tick_label(value, step)
        text_w = int(draw.textlength(label, font=small))
        widest = max(widest, text_w)
        draw.text((left - 8 - text_w, y - 7), label, fill=(40, 40, 40), font=small)
    _vertical_text(img, ylabel, (left - widest - 30, (top + bottom) // 2), small)


def _x_axis(draw: ImageDraw.ImageDraw, axes: _Axes, last: int, small: ImageFont.ImageFont) -> None:
    bottom = axes.box[3]
    for epoch in epoch_ticks(last):
        x, _ = axes.px(epoch, axes.y0)
        draw.line([(x, bottom), (x, bottom + 4)], fill=(0, 0, 0))
        label = str(epoch)
        draw.text((x - 4 * len(label), bottom + 7), label, fill=(40, 40, 40), font=small)


def _draw_series(
    draw: ImageDraw.ImageDraw,
    axes: _Axes,
    data: Iterable[tuple[list[tuple[float, float]], tuple[int, int, int]]],
) -> list[tuple[float, float]]:
    """Each series as a line with dots; returns every point drawn (the legend avoids them)."""
    all_pts = []
    for points, colour in data:
        pts = [axes.px(x, y) for x, y in points]
        all_pts.extend(pts)
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    return all_pts


def _legend(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    entries: Sequence[tuple[str, tuple[int, int, int], int]],
    points: Sequence[tuple[float, float]],
    font: ImageFont.ImageFont,
) -> None:
    """Legend in the corner that covers the fewest data points, on a white background."""
    left, top, right, bottom = box
    w = 40 + max(int(draw.textlength(label, font=font)) for label, _, _ in entries)
    h = 8 + 17 * len(entries)
    corners = [
        (right - w - 6, top + 6),
        (right - w - 6, bottom - h - 6),
        (left + 6, bottom - h - 6),
        (left + 6, top + 6),
    ]

    def covered(corner: tuple[int, int]) -> int:
        x, y = corner
        return sum(1 for px, py in points if x - 4 <= px <= x + w + 4 and y - 4 <= py <= y + h + 4)

    x, y = min(corners, key=covered)
    draw.rectangle((x, y, x + w, y + h), fill=(255, 255, 255), outline=(200, 200, 200))
    for i, (label, colour, width) in enumerate(entries):
        row = y + 4 + 17 * i
        draw.line([(x + 6, row + 7), (x + 28, row + 7)], fill=colour, width=width)
        draw.text((x + 34, row), label, fill=(0, 0, 0), font=font)


def _vertical_text(
    img: Image.Image,
    text: str,
    centre: tuple[int, int],
    font: ImageFont.ImageFont,
) -> None:
    """ImageDraw has no rotated text: draw it on a strip, rotate, paste."""
    size = ImageDraw.Draw(img).textbbox((0, 0), text, font=font)
    label = Image.new("RGBA", (size[2] + 4, size[3] + 4), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((2, 2), text, fill=(0, 0, 0, 255), font=font)
    rotated = label.rotate(90, expand=True)
    x, y = centre[0], centre[1] - rotated.size[1] // 2
    img.paste(rotated, (x, y), rotated)
