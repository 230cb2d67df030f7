"""``vitzoo evaluate`` and ``vitzoo predict``: accuracy, confusion matrix, top-k predictions.

Both start from a checkpoint written by ``vitzoo train`` (any ``vitzoo.save`` file works; its
classes are then called ``class_<i>``) and preprocess exactly as training evaluated:
:func:`vitzoo.data.resolve_data_config` of the model and the checkpoint's metadata.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.checkpoint import load, read_checkpoint
from vitzoo.data.config import ResolvedDataConfig, resolve_data_config
from vitzoo.data.folders import EpochBatches, FolderDataset, SampleIndex, loader
from vitzoo.data.images import DataError
from vitzoo.data.transforms import create_transform
from vitzoo.plugins import PluginSystem
from vitzoo.precision import autocast
from vitzoo.spec.sections import DataConfig
from vitzoo.training import distributed
from vitzoo.training.objective import classification_logits
from vitzoo.training.report import classification_report
from vitzoo.training.state import CLASSES_KEY, class_names

#: ``top5_accuracy``: the true class among the model's 5 most likely (timm's top-5).
TOP_K = 5


def evaluate_model(
    model: nn.Module,
    dataset: FolderDataset,
    num_classes: int,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    info: distributed.DistInfo | None = None,
    num_workers: int = 0,
    lockstep: bool = False,
) -> dict[str, Any]:
    """Loss, accuracy, balanced accuracy, per-class precision/recall/F1 and the confusion
    matrix (rows: true, cols: predicted); see :func:`vitzoo.training.report.classification_report`.

    Under data parallelism each process scores its share and the counts are summed.
    ``lockstep``: ``model`` is sharded (every call gathers parameters from all processes), so
    a process with fewer batches runs discarded forwards until it has called the model as
    often as the others.
    """
    device = torch.device(device)
    rank, world = (info.rank, info.world) if info else (0, 1)
    sampler = EpochBatches(
        len(dataset), batch_size, epoch=0, seed=0, train=False, rank=rank, world=world
    )
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    sums = torch.zeros(2, dtype=torch.float64)  # loss, top-5 hits
    was_training = model.training
    model.eval()
    calls = 0
    with torch.no_grad(), autocast(device, precision):
        for images, targets in loader(dataset, sampler, num_workers):
            logits = classification_logits(model(images.to(device))).float().cpu()
            sums[0] += F.cross_entropy(logits, targets, reduction="sum").double()
            top = logits.topk(min(TOP_K, num_classes), dim=-1).indices
            sums[1] += (top == targets[:, None]).any(dim=-1).sum().double()
            index = targets * num_classes + logits.argmax(dim=-1)
            confusion += torch.bincount(index, minlength=num_classes**2).view_as(confusion)
            calls += 1
        if lockstep:
            for _ in range(sampler.most_local_batches() - calls):
                model(torch.zeros(1, *model.input_size, device=device))
    model.train(was_training)
    if info is not None:
        distributed.all_reduce_sum(confusion, info)
        distributed.all_reduce_sum(sums, info)
    total = float(confusion.sum())
    counts = confusion.long().tolist()
    return {
        "samples": int(total),
        "loss": float(sums[0]) / max(total, 1.0),
        # with 5 classes or fewer every label is in the top 5: no information, so none
        "top5_accuracy": float(sums[1]) / max(total, 1.0) if num_classes > TOP_K else None,
        **classification_report(counts),
        "confusion": counts,
    }


def load_classifier(
    checkpoint: str | Path,
    *,
    system: PluginSystem | None = None,
    device: str = "cpu",
    runtime: str = "torch",
    precision: str = "fp32",
) -> tuple[nn.Module, list[str], ResolvedDataConfig]:
    """The model of ``checkpoint`` in eval mode, its class names and the input it wants
    (:func:`vitzoo.data.resolve_data_config` of the model and the checkpoint's metadata).

    A stored class list whose length disagrees with the model's outputs is a warning (the
    classes are then called ``class_<i>``), not a silent relabelling. ``runtime``/``precision``
    choose how it runs (:func:`vitzoo.runtime.deployed`); a ``.onnx`` file written by
    ``vitzoo export`` is run by ONNX Runtime with the spec in its metadata.
    """
    from vitzoo.runtime import deployed, load_onnx

    if Path(checkpoint).suffix == ".onnx":
        model, names = load_onnx(checkpoint, system=system)
        if model.vitzoo_spec is None:
            raise ValueError(f"{checkpoint}: no vitzoo spec in its metadata (use vitzoo export)")
        classes = names or [f"class_{i}" for i in range(int(model.vitzoo_spec.model.num_classes))]
        return model, classes, resolve_data_config(model)
    model = load(checkpoint, system=system, map_location=device).eval()
    _, metadata = read_checkpoint(checkpoint)
    outputs = int(model.num_classes)
    stored = json.loads(metadata[CLASSES_KEY]) if CLASSES_KEY in metadata else None
    if stored is not None and len(stored) != outputs:
        warnings.warn(
            f"{checkpoint}: the checkpoint names {len(stored)} classes but the model has "
            f"{outputs} outputs; predictions are labelled class_0..class_{outputs - 1}",
            stacklevel=2,
        )
    classes = class_names(metadata, outputs)
    model = deployed(model, runtime=runtime, precision=precision)
    return model, classes, resolve_data_config(model, checkpoint=metadata)


def evaluate(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    split: str | None = None,
    batch_size: int = 64,
    strict: bool = False,
    device: str = "cpu",
    system: PluginSystem | None = None,
    runtime: str = "torch",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Score ``checkpoint`` on ``data_dir/<split>`` (default: the spec's validation split, or
    ``data_dir`` itself when it directly holds class folders). ``data_dir`` may also be a
    ``path,label`` CSV file; with no ``split`` the checkpoint's ``data.val_csv`` is used when set.
    Video checkpoints read clip folders (see :mod:`vitzoo.data.folders`)."""
    model, classes, data_cfg = load_classifier(
        checkpoint, system=system, device=device, runtime=runtime, precision=precision
    )
    kind = "clip" if data_cfg.frames else "image"
    folder = find_split(Path(data_dir), split, data_cfg.data, classes, strict=strict, kind=kind)
    transform = create_transform(data_cfg, train=False)
    dataset = FolderDataset(folder, transform, seed=0, strict=strict, frames=data_cfg.frames)
    report = evaluate_model(model, dataset, len(classes), batch_size=batch_size, device=device)
    report["classes"] = classes
    report["data"] = str(folder.root)
    report["skipped"] = [[str(p), why] for p, why in folder.skipped]
    return report


def find_split(
    root: Path,
    split: str | None,
    data_cfg: DataConfig,
    classes: Sequence[str],
    *,
    strict: bool,
    kind: str,
) -> SampleIndex:
    """The labelled samples ``evaluate`` scores (see :func:`evaluate` for the rules)."""
    if root.is_file() and root.suffix.lower() == ".csv":
        return SampleIndex.from_csv(root, classes, strict=strict, kind=kind)
    if split is None and data_cfg.val_csv and (root / data_cfg.val_csv).is_file():
        return SampleIndex.from_csv(root / data_cfg.val_csv, classes, strict=strict, kind=kind)
    if split is not None:
        if (root / split).is_dir():
            return SampleIndex.scan(root / split, classes, strict=strict, kind=kind)
        if (root / f"{split}.csv").is_file():
            return SampleIndex.from_csv(root / f"{split}.csv", classes, strict=strict, kind=kind)
        if not root.is_dir():
            raise DataError(f"{root}: no such dataset folder")
        present = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        raise DataError(f"no split {split!r} in {root} (sub-folders: {present or 'none'})")
    if (root / data_cfg.val_split).is_dir():
        root = root / data_cfg.val_split
    return SampleIndex.scan(root, classes, strict=strict, kind=kind)


def predict(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    *,
    top_k: int = 5,
    device: str = "cpu",
    system: PluginSystem | None = None,
    runtime: str = "torch",
    precision: str = "fp32",
    batch_size: int = 64,
    num_workers: int = 0,
    flip: bool = False,
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities per image (or clip, for a video checkpoint), folders
    searched recursively; unreadable inputs get an ``error``. ``top_k`` must be >= 1 (more than
    the classes shows them all). The batched engine and its file output are
    :mod:`vitzoo.training.prediction` (``vitzoo predict``)."""
    from vitzoo.training.prediction import PredictOptions, collect_inputs, predict_rows

    if top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {top_k}")
    model, classes, data_cfg = load_classifier(
        checkpoint, system=system, device=device, runtime=runtime, precision=precision
    )
    paths = collect_inputs(images, clips=data_cfg.frames is not None)
    options = PredictOptions(top_k, batch_size, num_workers, device, flip)
    return [
        {"image": row["path"], **{k: v for k, v in row.items() if k != "path" and v is not None}}
        for row in predict_rows(model, classes, data_cfg, paths, options)
    ]
