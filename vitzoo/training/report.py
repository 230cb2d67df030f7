"""Per-class answers to "does it work for every group": precision, recall, F1, balanced accuracy.

Everything is computed from the confusion matrix (rows: true class, columns: predicted), so
the same numbers come out of ``vitzoo evaluate --json``, the end of ``vitzoo train`` and the
confusion-matrix PNG. A class with no samples has recall ``None`` (not 0: nothing was missed)
and is left out of the balanced accuracy; a class never predicted has precision ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def classification_report(confusion: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1 and per-class precision/recall/F1/support."""
    n = len(confusion)
    support = [sum(row) for row in confusion]
    predicted = [sum(confusion[r][c] for r in range(n)) for c in range(n)]
    correct = [confusion[i][i] for i in range(n)]
    total = sum(support)
    recall = [_ratio(correct[i], support[i]) for i in range(n)]
    precision = [_ratio(correct[i], predicted[i]) for i in range(n)]
    f1: list[float | None] = []
    for p, r in zip(precision, recall, strict=True):
        if r is None:
            f1.append(None)
        elif not p or not r:
            f1.append(0.0)
        else:
            f1.append(2 * p * r / (p + r))
    present = [r for r in recall if r is not None]
    scored = [f for f in f1 if f is not None]
    return {
        "accuracy": _ratio(sum(correct), total) or 0.0,
        "balanced_accuracy": sum(present) / len(present) if present else 0.0,
        "macro_f1": sum(scored) / len(scored) if scored else 0.0,
        "per_class_accuracy": recall,  # the share of each class's samples classified right
        "per_class_precision": precision,
        "per_class_recall": recall,
        "per_class_f1": f1,
        "support": support,
    }


def per_class_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per class (for tables and JSON consumers that want rows)."""
    return [
        {
            "class": name,
            "support": report["support"][i],
            "precision": report["per_class_precision"][i],
            "recall": report["per_class_recall"][i],
            "f1": report["per_class_f1"][i],
        }
        for i, name in enumerate(report["classes"])
    ]


# --------------------------------------------------------------------------------------------
# Confusion-matrix PNG
# --------------------------------------------------------------------------------------------
def plot_confusion(report: dict[str, Any], path: Path, title: str = "confusion matrix") -> Path:
    """Row-normalised confusion matrix with counts in the cells (matplotlib when installed,
    else a Pillow drawing with the same content)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        import matplotlib  # the optional 'plot' extra
    except ImportError:
        _confusion_pillow(report, tmp, title)
    else:
        matplotlib.use("Agg", force=False)
        _confusion_matplotlib(report, tmp, title)
    os.replace(tmp, path)
    return path


def _normalised(confusion: Sequence[Sequence[int]]) -> list[list[float]]:
    return [[v / max(sum(row), 1) for v in row] for row in confusion]


def _confusion_matplotlib(report: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    classes, confusion = report["classes"], report["confusion"]
    n = len(classes)
    side = min(14.0, max(4.5, 0.55 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=110)
    image = ax.imshow(_normalised(confusion), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(
        range(n), labels=classes, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center"
    )
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc, bal = report.get("accuracy", 0.0), report.get("balanced_accuracy", 0.0)
    ax.set_title(f"{title}\naccuracy {acc:.1%}, balanced accuracy {bal:.1%}")
    if n <= 30:
        norm = _normalised(confusion)
        for r in range(n):
            for c in range(n):
                colour = "white" if norm[r][c] > 0.5 else "black"
                ax.text(
                    c, r, str(confusion[r][c]), ha="center", va="center", color=colour, fontsize=8
                )
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _confusion_pillow(report: dict[str, Any], path: Path, title: str) -> None:
    classes, confusion = report["classes"], report["confusion"]
    n = len(classes)
    font = ImageFont.load_default()
    cell = max(28, min(60, 480 // max(n, 1)))
    label_w = 12 + 7 * max(len(c) for c in classes)
    left, top = label_w + 30, 60
    width = left + n * cell + 110
    height = top + n * cell + label_w + 40
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    acc, bal = report.get("accuracy", 0.0), report.get("balanced_accuracy", 0.0)
    draw.text((10, 8), title, fill=(0, 0, 0), font=font)
    draw.text(
        (10, 24), f"accuracy {acc:.1%}, balanced accuracy {bal:.1%}", fill=(0, 0, 0), font=font
    )
    norm = _normalised(confusion)
    for r in range(n):
        for c in range(n):
            shade = norm[r][c]
            colour = tuple(round(255 - shade * (255 - v)) for v in (8, 48, 107))
            box = (left + c * cell, top + r * cell, left + (c + 1) * cell, top + (r + 1) * cell)
            draw.rectangle(box, fill=colour, outline=(200, 200, 200))
            text = str(confusion[r][c])
            fill = (255, 255, 255) if shade > 0.5 else (0, 0, 0)
            draw.text(
                (box[0] + cell // 2 - 3 * len(text), box[1] + cell // 2 - 5),
                text,
                fill=fill,
                font=font,
            )
        draw.text((10, top + r * cell + cell // 2 - 5), classes[r], fill=(0, 0, 0), font=font)
    for c, name in enumerate(classes):
        label = Image.new("RGB", (label_w, 14), (255, 255, 255))
        ImageDraw.Draw(label).text((0, 1), name, fill=(0, 0, 0), font=font)
        rotated = label.rotate(90, expand=True)
        img.paste(rotated, (left + c * cell + cell // 2 - 7, top + n * cell + 6))
    draw.text((left, height - 18), "predicted class", fill=(0, 0, 0), font=font)
    draw.text((10, top - 16), "true class", fill=(0, 0, 0), font=font)
    # colour bar
    bar_left = left + n * cell + 20
    for i in range(n * cell):
        shade = 1.0 - i / max(n * cell - 1, 1)
        colour = tuple(round(255 - shade * (255 - v)) for v in (8, 48, 107))
        draw.line([(bar_left, top + i), (bar_left + 14, top + i)], fill=colour)
    draw.text((bar_left + 18, top - 5), "1.0", fill=(0, 0, 0), font=font)
    draw.text((bar_left + 18, top + n * cell - 8), "0.0", fill=(0, 0, 0), font=font)
    img.save(path, format="PNG")
