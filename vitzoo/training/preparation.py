"""What a training run starts from: the data's splits, the batch size, the model and its inputs.

Each function is one step of :func:`vitzoo.training.trainer.train`'s set-up and returns named
results, so the trainer reads as the list of those steps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from rich.markup import escape
from torch import nn

from vitzoo.builder import build_from_spec, resolve_spec
from vitzoo.checkpoint import CheckpointError
from vitzoo.data.config import ResolvedDataConfig, resolve_data_config
from vitzoo.data.folders import FolderDataset, SampleIndex
from vitzoo.data.images import DataError
from vitzoo.data.transforms import ModelInput, create_transform
from vitzoo.formats import SPEC_KEY
from vitzoo.plugins import PluginSystem
from vitzoo.spec import SpecBase, spec_to_dict
from vitzoo.spec.sources import read_spec_source
from vitzoo.training.progress import Reporter


class Splits(NamedTuple):
    """The training samples and, when the data has one, the validation samples."""

    train: SampleIndex
    val: SampleIndex | None


class BuiltModel(NamedTuple):
    """The model and the spec it was built from (the class count and, when fine-tuning, the
    weights' normalisation may differ from the spec asked for)."""

    spec: SpecBase
    model: nn.Module


def data_kind(spec: SpecBase) -> str:
    """``"clip"`` for a video model (its spec has ``frames``), else ``"image"``."""
    return "clip" if getattr(spec.model, "frames", None) else "image"


def _scan_split(
    data_dir: Path,
    split: str,
    csv_name: str | None,
    classes: list[str] | None,
    strict: bool,
    kind: str,
) -> SampleIndex:
    if csv_name:
        return SampleIndex.from_csv(data_dir / csv_name, classes, strict=strict, kind=kind)
    return SampleIndex.scan(data_dir / split, classes, strict=strict, kind=kind)


def scan_data(data_dir: Path, spec: SpecBase, strict: bool, reporter: Reporter) -> Splits:
    """The training samples and, if present, the validation samples (same class order).

    Class folders, or ``data.train_csv`` / ``data.val_csv`` tables; image files, or clips for a
    video model. One class is refused (a one-class classifier scores 100% and learns nothing);
    classes without a usable file are named in a warning.
    """
    cfg, kind = spec.data, data_kind(spec)
    train_index = _scan_split(data_dir, cfg.train_split, cfg.train_csv, None, strict, kind)
    if len(train_index.classes) < 2:
        raise DataError(
            f"{train_index.root}: only one class ({train_index.classes[0]!r}); a classifier "
            "needs at least two"
        )
    val_index = None
    val_root = data_dir / (cfg.val_csv or cfg.val_split)
    if val_root.exists():
        val_index = _scan_split(
            data_dir, cfg.val_split, cfg.val_csv, train_index.classes, strict, kind
        )
    else:
        reporter.log(f"no validation split at {escape(str(val_root))}; training metrics only")
    for index in (train_index, val_index):
        if index is None:
            continue
        for path, problem in index.skipped:
            reporter.log(
                f"[yellow]skipped unreadable {kind}[/] {escape(str(path))}: {escape(problem)}"
            )
        for name in index.empty:
            reporter.log(
                f"[yellow]warning:[/] class folder {escape(str(index.root / name))} holds no "
                f"usable {kind}s"
            )
    return Splits(train_index, val_index)


def with_model_of_weights(
    source: Any,
    changes: dict[str, Any],
    sources: dict[str, str],
    system: PluginSystem,
) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """A spec without a ``model:`` section (and no ``preset:``) that fine-tunes
    (``train.init_from``) takes the model from those weights; a weights source given where the
    spec goes (``vitzoo train ckpt.safetensors``) is the spec ``train.init_from: ckpt``.

    Returns the spec source and the changes to resolve it with: the weights' ``model`` first
    (a problem in it is blamed on ``train.init_from``), the caller's changes over it.
    """
    from vitzoo.weights.source_spec import model_of_source
    from vitzoo.weights.sources import is_weights_source

    if isinstance(source, SpecBase):
        return source, changes, sources
    if isinstance(source, str | Path) and is_weights_source(source):
        data: Any = {"train": {"init_from": str(source)}}
        source = data
    else:
        data = read_spec_source(source, system.registry).data
    if not isinstance(data, Mapping) or "model" in data or "preset" in data:
        return source, changes, sources
    train = data.get("train") if isinstance(data.get("train"), Mapping) else {}
    init_from = changes.get("train.init_from", train.get("init_from"))
    if not isinstance(init_from, str | Path):
        return source, changes, sources
    model = model_of_source(init_from, system)
    return (
        source,
        {"model": model, **changes},
        {"model": f"the model of train.init_from {init_from}", **sources},
    )


def global_batch_size(requested: int, images: int, world: int, multiple: int = 1) -> int:
    """The batch every step uses: at most the dataset, and split evenly across processes
    (and, with gradient accumulation, into ``multiple`` equal micro-batches on each)."""
    if requested % world:
        raise ValueError(f"train.batch_size={requested} must be divisible by the {world} processes")
    unit = world * multiple
    size = min(requested, images)
    size -= size % unit
    if size < unit:
        raise DataError(
            f"{images} training images cannot fill a batch on {world} processes x {multiple} "
            "micro-batches"
        )
    return size


def class_loss_weights(index: SampleIndex) -> torch.Tensor:
    """``N / (classes * count)`` per class (sklearn's 'balanced'); 0 for a class with none."""
    counts = index.class_counts()
    total, n = sum(counts), len(counts)
    return torch.tensor([total / (n * c) if c else 0.0 for c in counts], dtype=torch.float32)


def build_model(
    spec: SpecBase,
    num_classes: int,
    system: PluginSystem,
    reporter: Reporter,
    *,
    use_init_from: bool = True,
    classes: Sequence[str] | None = None,
) -> BuiltModel:
    """The model for ``num_classes`` classes, starting from ``train.init_from`` when set.

    Fine-tuning builds the model with the checkpoint's class count, loads it (learned positions
    resample to a new image size on load), then fits the head to the data's ``classes``: rows
    matched by class name where the checkpoint names its classes, else re-initialised for a
    new class count.
    """
    if getattr(spec.model, "num_classes", num_classes) != num_classes:
        reporter.log(
            f"model.num_classes={spec.model.num_classes} -> {num_classes} (the data has "
            f"{num_classes} classes)"
        )
        spec = resolve_spec(spec, {"model.num_classes": num_classes}, system=system)
    source = spec.train.init_from
    if source is None or not use_init_from:
        return BuiltModel(spec, build_from_spec(spec, system=system))
    from vitzoo.weights.fine_tune import fine_tune_start

    # Any weights source (vitzoo/timm checkpoint, HF folder, hf-hub:...): head reset for the
    # data's classes, positions resampled, the weights' normalisation adopted (one line each).
    spec, model = fine_tune_start(
        spec, system=system, log=lambda line: reporter.log(escape(line)), class_names=classes
    )
    reporter.log(f"fine-tuning from {escape(str(source))}")
    return BuiltModel(spec, model)


def check_same_model(spec: SpecBase, metadata: Mapping[str, str], run_dir: Path) -> None:
    """Resuming with another model spec cannot work: say which fields differ."""
    stored = json.loads(metadata.get(SPEC_KEY, "{}")).get("model", {})
    current = spec_to_dict(spec)["model"]
    changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if changed:
        raise CheckpointError(
            f"{run_dir}: the spec's model differs from the run's in {changed}; resume with the "
            "spec (and --set options) the run was started with"
        )


def input_config(model: nn.Module, reporter: Reporter, kind: str = "image") -> ResolvedDataConfig:
    """How the data must reach ``model``: :func:`vitzoo.data.resolve_data_config` of it (the
    spec's ``data:`` section; the weights' normalisation where the spec keeps vitzoo's
    defaults), refused when the model does not read the ``kind`` of data the spec names."""
    shape = ModelInput.of(model)
    if shape is None or (shape.frames is not None) != (kind == "clip"):
        raise ValueError(
            f"vitzoo train reads {'clip' if kind == 'clip' else 'image'} folders for this spec; "
            f"the model expects input {tuple(getattr(model, 'input_size', ()))}"
        )
    config = resolve_data_config(model)
    adopted = [
        f"{name}={value}"
        for name, value in (
            ("mean", config.mean),
            ("std", config.std),
            ("crop_pct", config.crop_pct),
        )
        if config.sources[name] in ("model", "checkpoint")
    ]
    if adopted:  # a spec `weights:` section (train.init_from already adopted them in the spec)
        reporter.log("data normalisation from the weights: " + escape(", ".join(adopted)))
    return config


def make_dataset(
    index: SampleIndex, data: ResolvedDataConfig, *, seed: int, train: bool, strict: bool
) -> FolderDataset:
    """The decoded, transformed samples of ``index`` as the model reads them (``data``)."""
    transform = create_transform(data, train=train)
    return FolderDataset(index, transform, seed=seed, strict=strict, frames=data.frames)
