"""Scoring during training: the validation columns of each epoch's row, which epoch is the best
(``train.best_metric``, ties to the lower validation loss), and the final per-class report on
``best.safetensors`` (``evaluation.json``, ``confusion.png`` and a few summary lines).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from torch import nn

from vitzoo.checkpoint import load_weights, read_checkpoint
from vitzoo.data.folders import FolderDataset
from vitzoo.training import distributed
from vitzoo.training.inference import evaluate_model
from vitzoo.training.report import per_class_rows, plot_confusion
from vitzoo.training.state import BEST

#: Where the run has no validation split, the training column standing in for each metric.
TRAIN_FALLBACK = {
    "val_accuracy": "train_accuracy",
    "val_balanced_accuracy": "train_accuracy",
    "val_loss": "train_loss",
}


def _value(row: Mapping[str, Any], column: str) -> float | None:
    value = row.get(column, row.get(TRAIN_FALLBACK.get(column, column)))
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def metric_value(row: Mapping[str, Any], metric: str) -> float | None:
    """The epoch's ``metric`` (``train.best_metric``), or its training stand-in."""
    return _value(row, metric)


def best_key(row: Mapping[str, Any], metric: str) -> tuple[float, float] | None:
    """How good an epoch is for ``best.safetensors``, as a tuple where larger is better: the
    metric (negated for a loss), then the tie-breaker -- the lower validation loss, or for a
    loss metric the higher accuracy. ``None``: the epoch has no such metric."""
    primary = _value(row, metric)
    if primary is None:
        return None
    if metric.endswith("loss"):
        tie = _value(row, "val_accuracy")
        return (-primary, tie if tie is not None else 0.0)
    tie = _value(row, "val_loss")
    return (primary, -tie if tie is not None else 0.0)


def is_new_best(history: Sequence[Mapping[str, Any]], row: Mapping[str, Any], metric: str) -> bool:
    """Whether ``row`` beats every earlier epoch (strictly: an equal epoch keeps the earlier)."""
    key = best_key(row, metric)
    if key is None:
        return False
    earlier = [k for r in history if (k := best_key(r, metric)) is not None]
    return not earlier or key > max(earlier)


def best_epoch(history: Sequence[Mapping[str, Any]], metric: str) -> int | None:
    """The epoch the trainer kept as ``best.safetensors`` (the first of equals)."""
    best, chosen = None, None
    for row in history:
        key = best_key(row, metric)
        if key is not None and (best is None or key > best):
            best, chosen = key, int(row["epoch"])
    return chosen


@dataclass
class Validation:
    """The validation split and how a run scores models on it (its batch, device, precision)."""

    dataset: FolderDataset
    classes: list[str]
    batch_size: int
    info: distributed.DistInfo
    precision: str
    num_workers: int
    #: The scored models are sharded (``train.strategy: fsdp``): every process calls them
    #: equally often (see :func:`~vitzoo.training.inference.evaluate_model`).
    lockstep: bool = False

    def score(self, model: nn.Module) -> dict[str, Any]:
        """Loss, accuracy, per-class counts: :func:`~vitzoo.training.inference.evaluate_model`."""
        return evaluate_model(
            model,
            self.dataset,
            len(self.classes),
            batch_size=self.batch_size,
            device=self.info.device,
            precision=self.precision,
            info=self.info,
            num_workers=self.num_workers,
            lockstep=self.lockstep,
        )

    def columns(self, model: nn.Module, raw_model: nn.Module | None = None) -> dict[str, Any]:
        """``val_*`` of ``model`` (the EMA when there is one) and ``raw_val_*`` of the raw
        weights when they are another model."""
        report = self.score(model)
        row = {
            "val_loss": report["loss"],
            "val_accuracy": report["accuracy"],
            "val_balanced_accuracy": report["balanced_accuracy"],
        }
        if raw_model is not None:
            raw = self.score(raw_model)
            row["raw_val_loss"] = raw["loss"]
            row["raw_val_accuracy"] = raw["accuracy"]
        return row

    def final_report(
        self,
        model: nn.Module,
        run_dir: Path,
        best_model: Callable[[Path], nn.Module] | None = None,
    ) -> dict[str, Any]:
        """Per-class evaluation of the best weights (``model`` with ``best.safetensors`` loaded
        when the run wrote one); rank 0 writes ``evaluation.json`` and ``confusion.png``.

        ``best_model(path)`` makes the scored model from the best file instead of a copy of
        ``model`` (a sharded model cannot be copied: the run loads and shards the file).
        """
        best_path = run_dir / BEST
        if best_path.is_file() and best_model is not None:
            model = best_model(best_path)
        elif best_path.is_file():
            model = copy.deepcopy(model)
            load_weights(model, read_checkpoint(best_path)[0], source=str(best_path))
        report = self.score(model)
        report["classes"] = list(self.classes)
        report["checkpoint"] = str(best_path)
        if self.info.is_main:
            (run_dir / "evaluation.json").write_text(
                json.dumps(report, indent=2) + "\n", encoding="utf-8"
            )
            plot_confusion(report, run_dir / "confusion.png", title="validation (best)")
        return report


def per_class_summary(report: dict[str, Any]) -> str:
    """A few plain lines: overall and balanced accuracy, then each class's precision/recall."""
    width = max(len(c) for c in report["classes"])

    def pct(value: float | None) -> str:
        return "   -  " if value is None else f"{value:6.1%}"

    lines = [
        f"best checkpoint on validation: accuracy {report['accuracy']:.2%}, balanced accuracy "
        f"{report['balanced_accuracy']:.2%}, macro F1 {report['macro_f1']:.3f}",
        f"  {'class'.ljust(width)}  support  precision  recall",
    ]
    for row in per_class_rows(report):
        lines.append(
            f"  {escape(row['class']).ljust(width)}  {row['support']:7d}     "
            f"{pct(row['precision'])}  {pct(row['recall'])}"
        )
    return "\n".join(lines)
