"""``vitzoo train``: fit a spec's model on an image folder, with checkpoints, metrics and resume.

:func:`train` behaves the same in one process and under ``torchrun``: each process takes its
slice of every global batch, DistributedDataParallel averages the gradients, and only rank 0
writes. Determinism: the model is initialised from ``train.seed``; data order and augmentation
are derived from ``(seed, epoch, sample)`` (see :mod:`vitzoo.training.data`); the global RNG
(dropout, drop-path, mixup) is saved in every checkpoint. Together these make a resumed run end
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

from vitzoo.builder import build_from_spec, resolve_spec
from vitzoo.checkpoint import CheckpointError, load_weights
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.spec import SpecBase, spec_to_dict, spec_to_yaml
from vitzoo.training import distributed
from vitzoo.training.data import (
    DataError,
    EpochBatches,
    FolderDataset,
    ImageFolder,
    Transform,
    loader,
)
from vitzoo.training.inference import evaluate_model
from vitzoo.training.metrics import plot_curves, write_metrics
from vitzoo.training.objective import make_objective
from vitzoo.training.optim import lr_at, make_optimizer, set_lr
from vitzoo.training.progress import Reporter
from vitzoo.training.state import (
    LAST,
    TrainingState,
    read_run_checkpoint,
    restore_rng,
    save_run_checkpoint,
)


@dataclass
class TrainResult:
    """What a finished run leaves: where, the per-epoch history, and the trained model."""

    run_dir: Path
    history: list[dict[str, Any]]
    classes: list[str]
    model: nn.Module = field(repr=False)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


# --------------------------------------------------------------------------------------------
# Set-up helpers
# --------------------------------------------------------------------------------------------
def build_model(
    spec: SpecBase,
    num_classes: int,
    system: PluginSystem,
    reporter: Reporter,
    *,
    use_init_from: bool = True,
) -> tuple[SpecBase, nn.Module]:
    """The model for ``num_classes`` classes, starting from ``train.init_from`` when set.

    Fine-tuning builds the model with the checkpoint's class count, loads it (learned positions
    resample to a new image size on load), then resets the head for the data's classes.
    """
    if getattr(spec.model, "num_classes", num_classes) != num_classes:
        reporter.log(
            f"model.num_classes={spec.model.num_classes} -> {num_classes} (the data has "
            f"{num_classes} classes)"
        )
        spec = resolve_spec(spec, {"model.num_classes": num_classes}, system=system)
    source = spec.train.init_from
    if source is None or not use_init_from:
        return spec, build_from_spec(spec, system=system)
    from vitzoo.weights.load import fine_tune_start

    # Any weights source (vitzoo/timm checkpoint, HF folder, hf-hub:...): head reset for the
    # data's classes, positions resampled, the weights' normalisation adopted (one line each).
    spec, model = fine_tune_start(spec, system=system, log=lambda line: reporter.log(escape(line)))
    reporter.log(f"fine-tuning from {escape(str(source))}")
    return spec, model


def scan_data(
    data_dir: Path, spec: SpecBase, strict: bool, reporter: Reporter
) -> tuple[ImageFolder, ImageFolder | None]:
    """The training folder and, if present, the validation folder (same class order)."""
    train_folder = ImageFolder.scan(data_dir / spec.data.train_split, strict=strict)
    val_root = data_dir / spec.data.val_split
    val_folder = None
    if val_root.is_dir():
        val_folder = ImageFolder.scan(val_root, train_folder.classes, strict=strict)
    else:
        reporter.log(f"no validation split at {escape(str(val_root))}; training metrics only")
    for folder in (train_folder, val_folder):
        for path, problem in folder.skipped if folder else ():
            reporter.log(
                f"[yellow]skipped unreadable image[/] {escape(str(path))}: {escape(problem)}"
            )
    return train_folder, val_folder


def global_batch_size(requested: int, images: int, world: int) -> int:
    """The batch every step uses: at most the dataset, and split evenly across processes."""
    if requested % world:
        raise ValueError(f"train.batch_size={requested} must be divisible by the {world} processes")
    size = min(requested, images)
    size -= size % world
    if size < world:
        raise DataError(f"{images} training images cannot fill a batch on {world} processes")
    return size


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
class _Run:
    """One training run's moving parts; :func:`train` drives it epoch by epoch."""

    def __init__(
        self,
        spec: SpecBase,
        model: nn.Module,
        train_set: FolderDataset,
        val_set: FolderDataset | None,
        classes: list[str],
        batch: int,
        info: distributed.DistInfo,
        reporter: Reporter,
        run_dir: Path,
        system: PluginSystem,
    ) -> None:
        self.spec, self.cfg = spec, spec.train
        self.model, self.classes, self.batch = model, classes, batch
        self.train_set, self.val_set = train_set, val_set
        self.info, self.reporter, self.run_dir = info, reporter, run_dir
        model.to(info.device)
        if self.cfg.grad_checkpointing:
            model.set_grad_checkpointing(True)
        self.objective = make_objective(spec, model, system).to(info.device)
        self.optimizer = make_optimizer(self.objective, model, self.cfg)
        self.steps_per_epoch = len(train_set) // batch
        self.total_steps = self.steps_per_epoch * self.cfg.epochs
        self.warmup_steps = round(self.cfg.warmup_epochs * self.steps_per_epoch)
        self.history: list[dict[str, Any]] = []
        self.epoch, self.step, self.best = 0, 0, None
        self.runner: nn.Module = self.objective

    def restore(self, state: TrainingState) -> None:
        """Continue where ``state`` ended (call before :meth:`wrap`)."""
        self.optimizer.load_state_dict(state.optimizer)
        if state.objective_extra:
            own = {f"model.{k}": v for k, v in self.model.state_dict().items()}
            self.objective.load_state_dict({**own, **state.objective_extra})
        self.epoch, self.step, self.best = state.epoch, state.step, state.best_accuracy
        self.history = list(state.history)
        restore_rng(state.rng)

    def wrap(self) -> None:
        """torch.compile and DistributedDataParallel, as configured."""
        if self.cfg.compile:
            self.objective.compile()
        if self.info.enabled:
            cuda = self.info.device.type == "cuda"
            self.runner = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.info.device.index] if cuda else None
            )

    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.cfg)

    def train_epoch(self) -> dict[str, Any]:
        info, cfg = self.info, self.cfg
        self.objective.train()
        sampler = EpochBatches(
            len(self.train_set),
            self.batch,
            epoch=self.epoch,
            seed=cfg.seed,
            train=True,
            rank=info.rank,
            world=info.world,
        )
        self.reporter.start_epoch(self.epoch + 1, cfg.epochs, self.steps_per_epoch)
        sums = torch.zeros(3, dtype=torch.float64)  # loss * n, accuracy * n, n
        has_accuracy = False
        started = time.perf_counter()
        batches = loader(self.train_set, sampler, self.spec.data.num_workers)
        for local_step, (images, targets) in enumerate(batches, start=1):
            images = images.to(info.device, non_blocking=True)
            targets = targets.to(info.device, non_blocking=True)
            lr = self.lr(self.step)
            set_lr(self.optimizer, lr)
            with autocast(info.device, cfg.precision):
                output = self.runner(images, targets)
            self._check_finite(output.loss, local_step)
            output.loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.objective.trainable_parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.objective.after_step()
            self.step += 1
            n = images.shape[0]
            loss = float(output.metrics["loss"])
            sums[0] += loss * n
            if "accuracy" in output.metrics:
                has_accuracy = True
                sums[1] += float(output.metrics["accuracy"]) * n
            sums[2] += n
            self.reporter.step(local_step, loss, n * info.world, lr)
        self.reporter.end_epoch()
        distributed.all_reduce_sum(sums, info)
        seconds = time.perf_counter() - started
        row: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": self.lr(max(self.step - 1, 0)),
            "train_loss": float(sums[0] / max(sums[2], 1)),
        }
        if has_accuracy:
            row["train_accuracy"] = float(sums[1] / max(sums[2], 1))
        row["seconds"] = round(seconds, 3)
        row["images_per_second"] = round(float(sums[2]) / max(seconds, 1e-9), 1)
        return row

    def _check_finite(self, loss: torch.Tensor, local_step: int) -> None:
        """Stop on a NaN/Inf loss -- on every process at once, so none waits forever."""
        bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], dtype=torch.float64)
        if distributed.all_reduce_sum(bad, self.info).item() > 0:
            raise FloatingPointError(
                f"the loss is not finite at epoch {self.epoch + 1} step {local_step}; "
                "lower train.lr or set train.grad_clip"
            )

    def validate(self, row: dict[str, Any]) -> None:
        if self.val_set is None:
            return
        report = evaluate_model(
            self.model,
            self.val_set,
            len(self.classes),
            batch_size=self.batch,
            device=self.info.device,
            precision=self.cfg.precision,
            info=self.info,
            num_workers=self.spec.data.num_workers,
        )
        row["val_loss"] = report["loss"]
        row["val_accuracy"] = report["accuracy"]

    def finish_epoch(self, row: dict[str, Any]) -> None:
        """Record the epoch; rank 0 writes checkpoint, metrics and plot."""
        self.history.append(row)
        self.epoch += 1
        score = row.get("val_accuracy", row.get("train_accuracy"))
        is_best = score is not None and (self.best is None or score > self.best)
        if is_best:
            self.best = score
        if self.info.is_main:
            save_run_checkpoint(
                self.run_dir,
                self.model,
                self.objective,
                self.optimizer,
                epoch=self.epoch,
                step=self.step,
                classes=self.classes,
                history=self.history,
                best_accuracy=self.best,
                is_best=is_best,
            )
            write_metrics(self.run_dir, self.history)
            plot_curves(self.history, self.run_dir / "curves.png")
            parts = [f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}"]
            if "val_loss" in row:
                parts.append(f"val loss {row['val_loss']:.4f}, val acc {row['val_accuracy']:.2%}")
            parts.append(f"{row['seconds']:.1f}s, {row['images_per_second']:.0f} img/s")
            self.reporter.log(", ".join(parts))
        distributed.barrier(self.info)


def train(
    spec: Any,
    data_dir: str | Path,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    strict_data: bool = False,
    overrides: Mapping[str, Any] | None = None,
    system: PluginSystem | None = None,
    console: Console | None = None,
) -> TrainResult:
    """Train the model ``spec`` describes on ``data_dir/<train split>/<class>/<image>``.

    ``spec``: a YAML path, preset name, mapping or spec. ``epochs``/``batch_size`` override
    ``train.epochs``/``train.batch_size``; ``overrides`` sets any spec field by dotted path.
    ``out`` is the run folder (default ``runs/<spec name>``); ``resume`` continues from
    ``out/last.safetensors``.
    """
    system = system or get_plugin_system()
    changes = dict(overrides or {})
    sources = {k: f"--set {k}={v}" for k, v in changes.items()}
    if epochs is not None:
        changes["train.epochs"] = epochs
        sources["train.epochs"] = f"--epochs {epochs}"
    if batch_size is not None:
        changes["train.batch_size"] = batch_size
        sources["train.batch_size"] = f"--batch-size {batch_size}"
    name = Path(spec).stem if isinstance(spec, str | Path) else None
    spec = resolve_spec(spec, changes, system=system, sources=sources)
    run_dir = Path(out) if out is not None else Path("runs") / (name or spec.model.type)

    info = distributed.setup(spec.train.device)
    reporter = Reporter(console, enabled=info.is_main, log_every=spec.train.log_every)
    try:
        if not resume and (run_dir / LAST).exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it or --out elsewhere"
            )
        train_folder, val_folder = scan_data(Path(data_dir), spec, strict_data, reporter)
        classes = train_folder.classes
        batch = global_batch_size(spec.train.batch_size, len(train_folder), info.world)

        torch.manual_seed(spec.train.seed)
        state = read_run_checkpoint(run_dir) if resume else None
        spec, model = build_model(spec, len(classes), system, reporter, use_init_from=state is None)
        if state is not None:
            check_same_model(spec, state[1], run_dir)
            load_weights(model, state[0], source=str(run_dir / LAST))
        channels, height, width = image_input(model)

        def dataset(folder: ImageFolder, training: bool) -> FolderDataset:
            transform = Transform((height, width), channels, spec.data, train=training)
            return FolderDataset(folder, transform, seed=spec.train.seed, strict=strict_data)

        run = _Run(
            spec,
            model,
            dataset(train_folder, True),
            dataset(val_folder, False) if val_folder is not None else None,
            classes,
            batch,
            info,
            reporter,
            run_dir,
            system,
        )
        if state is not None:
            run.restore(state[2])
            reporter.log(f"resuming {escape(str(run_dir))} after epoch {run.epoch}")
        run.wrap()
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "spec.yaml").write_text(spec_to_yaml(spec), encoding="utf-8")
            reporter.log(
                f"training {spec.model.type} on {len(train_folder)} images, {len(classes)} "
                f"classes; {spec.train.epochs} epochs x {run.steps_per_epoch} steps of {batch} "
                f"on {info.world} x {info.device}; run folder {escape(str(run_dir))}"
            )
        if run.epoch >= spec.train.epochs:
            reporter.log(f"{escape(str(run_dir))} already finished {run.epoch} epochs")
        while run.epoch < spec.train.epochs:
            row = run.train_epoch()
            run.validate(row)
            run.finish_epoch(row)
        return TrainResult(run_dir, run.history, classes, model)
    finally:
        reporter.end_epoch()
        distributed.teardown(info)


def check_same_model(spec: SpecBase, metadata: Mapping[str, str], run_dir: Path) -> None:
    """Resuming with another model spec cannot work: say which fields differ."""
    stored = json.loads(metadata.get("vitzoo.spec", "{}")).get("model", {})
    current = spec_to_dict(spec)["model"]
    changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if changed:
        raise CheckpointError(
            f"{run_dir}: the spec's model differs from the run's in {changed}; resume with the "
            "spec (and --set options) the run was started with"
        )


def image_input(model: nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image model (video models are not trained from image folders)."""
    size = tuple(getattr(model, "input_size", ()))
    if len(size) != 3:
        raise ValueError(
            f"vitzoo train reads image folders; this model expects input {size} (not C, H, W)"
        )
    return size  # type: ignore[return-value]


__all__ = ["CheckpointError", "DataError", "TrainResult", "build_model", "train"]
