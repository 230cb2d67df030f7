"""``vitzoo evaluate`` and ``vitzoo predict``: accuracy, confusion matrix, top-k predictions.

Both start from a checkpoint written by ``vitzoo train`` (any ``vitzoo.save`` file works; its
classes are then called ``class_<i>``) and preprocess exactly as training evaluated: the
checkpoint's own ``data:`` section and the model's input size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.checkpoint import load, read_checkpoint
from vitzoo.plugins import PluginSystem
from vitzoo.training import distributed
from vitzoo.training.config import DataConfig
from vitzoo.training.data import (
    EpochBatches,
    FolderDataset,
    ImageFolder,
    Transform,
    image_error,
    loader,
    open_image,
)
from vitzoo.training.objective import classification_logits
from vitzoo.training.state import class_names


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
) -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy and confusion matrix (rows: true, cols: predicted).

    Under data parallelism each process scores its share and the counts are summed.
    """
    device = torch.device(device)
    rank, world = (info.rank, info.world) if info else (0, 1)
    sampler = EpochBatches(
        len(dataset), batch_size, epoch=0, seed=0, train=False, rank=rank, world=world
    )
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    loss_sum = torch.zeros(1, dtype=torch.float64)
    was_training = model.training
    model.eval()
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    with torch.no_grad(), autocast:
        for images, targets in loader(dataset, sampler, num_workers):
            logits = classification_logits(model(images.to(device))).float().cpu()
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
            index = targets * num_classes + logits.argmax(dim=-1)
            confusion += torch.bincount(index, minlength=num_classes**2).view_as(confusion)
    model.train(was_training)
    if info is not None:
        distributed.all_reduce_sum(confusion, info)
        distributed.all_reduce_sum(loss_sum, info)
    total = float(confusion.sum())
    per_class_total = confusion.sum(dim=1)
    per_class = torch.where(
        per_class_total > 0, confusion.diag() / per_class_total.clamp(min=1), torch.nan
    )
    return {
        "samples": int(total),
        "loss": float(loss_sum) / max(total, 1.0),
        "accuracy": float(confusion.diag().sum()) / max(total, 1.0),
        "per_class_accuracy": [None if v != v else float(v) for v in per_class.tolist()],
        "confusion": confusion.long().tolist(),
    }


def load_classifier(
    checkpoint: str | Path, *, system: PluginSystem | None = None, device: str = "cpu"
) -> tuple[nn.Module, list[str], DataConfig]:
    """The model of ``checkpoint`` in eval mode, its class names and its data settings."""
    model = load(checkpoint, system=system, map_location=device).eval()
    _, metadata = read_checkpoint(checkpoint)
    classes = class_names(metadata, int(model.num_classes))
    data_cfg = getattr(model.vitzoo_spec, "data", None) or DataConfig()
    from vitzoo.weights.preprocessing import Preprocessing, data_overrides

    # Converted pretrained weights say how their inputs were normalised / cropped.
    data_cfg = data_cfg.model_copy(
        update=data_overrides(Preprocessing.from_metadata(metadata), data_cfg)
    )
    return model, classes, data_cfg


def _eval_transform(model: nn.Module, data_cfg: DataConfig) -> Transform:
    size = tuple(model.input_size)
    if len(size) != 3:
        raise ValueError(f"expected an image model with input (C, H, W), got {size}")
    channels, height, width = size
    return Transform((height, width), channels, data_cfg, train=False)


def evaluate(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    split: str | None = None,
    batch_size: int = 64,
    strict: bool = False,
    device: str = "cpu",
    system: PluginSystem | None = None,
) -> dict[str, Any]:
    """Score ``checkpoint`` on ``data_dir/<split>`` (default: the spec's validation split, or
    ``data_dir`` itself when it directly holds class folders)."""
    model, classes, data_cfg = load_classifier(checkpoint, system=system, device=device)
    root = Path(data_dir)
    chosen = split or data_cfg.val_split
    if (root / chosen).is_dir():
        root = root / chosen
    folder = ImageFolder.scan(root, classes, strict=strict)
    dataset = FolderDataset(folder, _eval_transform(model, data_cfg), seed=0, strict=strict)
    report = evaluate_model(model, dataset, len(classes), batch_size=batch_size, device=device)
    report["classes"] = classes
    report["data"] = str(root)
    report["skipped"] = [[str(p), why] for p, why in folder.skipped]
    return report


def predict(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    *,
    top_k: int = 5,
    device: str = "cpu",
    system: PluginSystem | None = None,
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities per image; unreadable images get an ``error``."""
    model, classes, data_cfg = load_classifier(checkpoint, system=system, device=device)
    transform = _eval_transform(model, data_cfg)
    k = max(1, min(top_k, len(classes)))
    results: list[dict[str, Any]] = []
    for path in images:
        try:
            img = open_image(path, transform.channels)
        except Exception as exc:  # Pillow raises many types for bad files
            results.append({"image": str(path), "error": image_error(path, exc)})
            continue
        with torch.no_grad():
            logits = classification_logits(model(transform(img).unsqueeze(0).to(device)))
        probs = logits.float().softmax(dim=-1)[0].cpu()
        values, indices = probs.topk(k)
        results.append(
            {
                "image": str(path),
                "top": [
                    {"class": classes[i], "index": int(i), "probability": float(p)}
                    for p, i in zip(values.tolist(), indices.tolist(), strict=True)
                ],
            }
        )
    return results
