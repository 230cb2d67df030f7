"""``vitzoo train``: fit a spec's model on an image folder, with checkpoints, metrics and resume.

:func:`train` behaves the same in one process and under ``torchrun``: each process takes its
slice of every global batch, DistributedDataParallel averages the gradients, and only rank 0
writes. Determinism: the model is initialised from ``train.seed``; data order and augmentation
are derived from ``(seed, epoch, sample)`` (see :mod:`vitzoo.training.data`); the global RNG
(dropout, drop-path, mixup) is saved in every checkpoint, together with the weight EMA and the
fp16 gradient scale. Together these make a resumed run end with the same weights as an
uninterrupted one -- also after Ctrl-C in the middle of an epoch, which saves the last finished
step (the data loader's worker seed comes from its own generator, so skipping the finished
batches replays the global RNG exactly).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import signal
import threading
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
from vitzoo.checkpoint import CheckpointError, load_weights, read_checkpoint
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.spec import SpecBase, spec_to_dict, spec_to_yaml
from vitzoo.terminal import plural
from vitzoo.training import distributed
from vitzoo.training.data import (
    DataError,
    EpochBatches,
    FolderDataset,
    ImageFolder,
    Transform,
    balanced_weights,
    generator,
    loader,
)
from vitzoo.training.ema import ModelEma
from vitzoo.training.inference import evaluate_model, precision_context
from vitzoo.training.metrics import plot_curves, write_metrics
from vitzoo.training.objective import make_objective
from vitzoo.training.optim import lr_at, make_optimizer, set_lr
from vitzoo.training.progress import Reporter
from vitzoo.training.report import per_class_rows, plot_confusion
from vitzoo.training.state import (
    BEST,
    LAST,
    TrainingState,
    read_run_checkpoint,
    restore_rng,
    rng_state,
    save_run_checkpoint,
)


@dataclass
class TrainResult:
    """What a finished run leaves: where, the per-epoch history, and the trained model."""

    run_dir: Path
    history: list[dict[str, Any]]
    classes: list[str]
    model: nn.Module = field(repr=False)
    #: Per-class evaluation of best.safetensors on the validation split (None without one).
    report: dict[str, Any] | None = field(default=None, repr=False)

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
) -> ImageFolder:
    if csv_name:
        return ImageFolder.from_csv(data_dir / csv_name, classes, strict=strict, kind=kind)
    return ImageFolder.scan(data_dir / split, classes, strict=strict, kind=kind)


def scan_data(
    data_dir: Path, spec: SpecBase, strict: bool, reporter: Reporter
) -> tuple[ImageFolder, ImageFolder | None]:
    """The training samples and, if present, the validation samples (same class order).

    Class folders, or ``data.train_csv`` / ``data.val_csv`` tables; image files, or clips for a
    video model. One class is refused (a one-class classifier scores 100% and learns nothing);
    classes without a usable file are named in a warning.
    """
    cfg, kind = spec.data, data_kind(spec)
    train_folder = _scan_split(data_dir, cfg.train_split, cfg.train_csv, None, strict, kind)
    if len(train_folder.classes) < 2:
        raise DataError(
            f"{train_folder.root}: only one class ({train_folder.classes[0]!r}); a classifier "
            "needs at least two"
        )
    val_folder = None
    val_root = data_dir / (cfg.val_csv or cfg.val_split)
    if val_root.exists():
        val_folder = _scan_split(
            data_dir, cfg.val_split, cfg.val_csv, train_folder.classes, strict, kind
        )
    else:
        reporter.log(f"no validation split at {escape(str(val_root))}; training metrics only")
    for folder in (train_folder, val_folder):
        if folder is None:
            continue
        for path, problem in folder.skipped:
            reporter.log(
                f"[yellow]skipped unreadable {kind}[/] {escape(str(path))}: {escape(problem)}"
            )
        for name in folder.empty:
            reporter.log(
                f"[yellow]warning:[/] class folder {escape(str(folder.root / name))} holds no "
                f"usable {kind}s"
            )
    return train_folder, val_folder


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


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    return precision_context(device, precision)


def class_loss_weights(folder: ImageFolder) -> torch.Tensor:
    """``N / (classes * count)`` per class (sklearn's 'balanced'); 0 for a class with none."""
    counts = folder.class_counts()
    total, n = sum(counts), len(counts)
    return torch.tensor([total / (n * c) if c else 0.0 for c in counts], dtype=torch.float32)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; ``saved`` says whether ``run_dir`` holds the last finished step
    (then ``--resume`` continues exactly from it)."""

    def __init__(self, run_dir: Path, epoch: int, epoch_step: int, step: int, saved: bool):
        self.run_dir, self.epoch, self.epoch_step = run_dir, epoch, epoch_step
        self.step, self.saved = step, saved
        where = (
            f"epoch {epoch + 1} step {epoch_step}" if epoch_step else f"the end of epoch {epoch}"
        )
        super().__init__(
            f"interrupted; {run_dir} holds the run at {where} ({plural(step, 'step')} in all)"
            if saved
            else f"interrupted while saving; {run_dir} keeps its previous checkpoint"
        )


class StopRequest:
    """First Ctrl-C: finish the current step, save, stop. A second one: stop at once.

    Only installed in the main thread, and only over Python's default SIGINT handler (a host
    application's own handler is left alone).
    """

    def __init__(self, reporter: Reporter) -> None:
        self.requested = False
        self.reporter = reporter
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.reporter.log("[yellow]Ctrl-C[/]: stopping after this step (press again to stop now)")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class _StopNow(Exception):
    """Raised inside the loop when a requested stop has been reached."""


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
        class_weights: torch.Tensor | None = None,
        sample_weights: torch.Tensor | None = None,
    ) -> None:
        self.spec, self.cfg = spec, spec.train
        self.model, self.classes, self.batch = model, classes, batch
        self.train_set, self.val_set = train_set, val_set
        self.info, self.reporter, self.run_dir = info, reporter, run_dir
        self.sample_weights = sample_weights
        model.to(info.device)
        if self.cfg.grad_checkpointing:
            model.set_grad_checkpointing(True)
        extra = {} if class_weights is None else {"class_weights": class_weights}
        self.objective = make_objective(spec, model, system, **extra).to(info.device)
        if class_weights is not None and getattr(self.objective, "class_weights", None) is None:
            reporter.log(
                f"[yellow]warning:[/] train.class_weights=balanced has no effect: objective "
                f"{type(self.objective).__name__} takes no class weights"
            )
        self.optimizer = make_optimizer(self.objective, model, self.cfg)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.cfg.precision == "fp16")
        self.ema = ModelEma(model, self.cfg.ema_decay) if self.cfg.ema_decay else None
        self.steps_per_epoch = len(train_set) // batch
        self.total_steps = self.steps_per_epoch * self.cfg.epochs
        self.warmup_steps = round(self.cfg.warmup_epochs * self.steps_per_epoch)
        self.history: list[dict[str, Any]] = []
        self.epoch, self.step, self.best = 0, 0, None
        self.runner: nn.Module = self.objective
        # Inside an epoch: steps done, running sums (loss*n, accuracy*n, n), accuracy seen.
        self.epoch_step = 0
        self.sums = torch.zeros(3, dtype=torch.float64)
        self.has_accuracy = False
        self.epoch_seconds = 0.0
        self.committing = False
        self.rng_at_step = rng_state()
        self.stop = StopRequest(reporter)

    def restore(self, state: TrainingState) -> None:
        """Continue where ``state`` ended (call before :meth:`wrap`)."""
        self.optimizer.load_state_dict(state.optimizer)
        if state.objective_extra:
            own = {f"model.{k}": v for k, v in self.model.state_dict().items()}
            self.objective.load_state_dict({**own, **state.objective_extra})
        self.epoch, self.step, self.best = state.epoch, state.step, state.best_accuracy
        self.history = list(state.history)
        if state.epoch_step:
            partial = state.partial or {}
            self.epoch_step = state.epoch_step
            self.sums = torch.tensor(partial.get("sums", [0.0, 0.0, 0.0]), dtype=torch.float64)
            self.has_accuracy = bool(partial.get("has_accuracy", False))
            self.epoch_seconds = float(partial.get("seconds", 0.0))
        if state.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.scaler)
        if self.ema is not None and state.ema:
            self.ema.load_state_tensors(state.ema, state.ema_updates)
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

    def unwrap(self) -> None:
        """Drop the DistributedDataParallel wrapper while the process group still exists.

        Its reducer holds the gloo process group; freed after ``destroy_process_group`` (when
        the run object is collected later), the group's destructor joins worker threads that
        wait for the GIL the destructor holds, and the process never exits.
        """
        self.runner = self.objective
        gc.collect()

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
            sample_weights=self.sample_weights,
            start_step=self.epoch_step,
        )
        self.reporter.start_epoch(self.epoch + 1, cfg.epochs, self.steps_per_epoch)
        started = time.perf_counter() - self.epoch_seconds
        # The loader's worker seed comes from its own generator, not the global RNG, so
        # resuming inside an epoch replays the global RNG exactly.
        batches = loader(
            self.train_set,
            sampler,
            self.spec.data.num_workers,
            generator=generator(cfg.seed, self.epoch, -2),
        )
        for images, targets in batches:
            self.rng_at_step = rng_state()
            loss, n = self.train_step(images, targets)
            self.epoch_seconds = time.perf_counter() - started
            self.reporter.step(self.epoch_step, loss, n * info.world, self.lr(self.step - 1))
            if self.stop.requested and self.epoch_step < self.steps_per_epoch:
                raise _StopNow
        self.reporter.end_epoch()
        # Until finish_epoch has saved, an interruption cannot save a consistent state.
        self.committing = True
        sums = self.sums.clone()
        distributed.all_reduce_sum(sums, info)
        seconds = time.perf_counter() - started
        row: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": self.lr(max(self.step - 1, 0)),
            "train_loss": float(sums[0] / max(sums[2], 1)),
        }
        if self.has_accuracy:
            row["train_accuracy"] = float(sums[1] / max(sums[2], 1))
        row["seconds"] = round(seconds, 3)
        row["images_per_second"] = round(float(sums[2]) / max(seconds, 1e-9), 1)
        self.epoch_step, self.epoch_seconds, self.has_accuracy = 0, 0.0, False
        self.sums = torch.zeros(3, dtype=torch.float64)
        return row

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
        """Forward/backward over ``accumulation_steps`` equal micro-batches, then one update.

        Each micro-batch's loss is divided by their number, so the summed gradient is the
        gradient of the whole batch's mean loss (what one step on the full batch computes).
        """
        cfg, info = self.cfg, self.info
        lr = self.lr(self.step)
        set_lr(self.optimizer, lr)
        parts = cfg.accumulation_steps
        image_chunks = images.chunk(parts)
        target_chunks = targets.chunk(parts)
        losses: list[torch.Tensor] = []
        metric_sums: dict[str, float] = {}
        for index, (x, y) in enumerate(zip(image_chunks, target_chunks, strict=True)):
            x = x.to(info.device, non_blocking=True)
            y = y.to(info.device, non_blocking=True)
            last = index == parts - 1
            sync = contextlib.nullcontext()
            if not last and isinstance(self.runner, nn.parallel.DistributedDataParallel):
                sync = self.runner.no_sync()
            with sync:
                with autocast(info.device, cfg.precision):
                    output = self.runner(x, y)
                losses.append(output.loss.detach().float())
                self.scaler.scale(output.loss / parts).backward()
            for key in ("loss", "accuracy"):
                if key in output.metrics:
                    metric_sums[key] = metric_sums.get(key, 0.0) + float(output.metrics[key])
        self._check_finite(torch.stack(losses).sum(), self.epoch_step + 1)
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.objective.trainable_parameters(), cfg.grad_clip)
        # From here the step changes the weights: a Ctrl-C cannot leave a half-updated model.
        self.committing = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.objective.after_step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.epoch_step += 1
        n = images.shape[0]
        loss = metric_sums["loss"] / parts
        self.sums[0] += loss * n
        if "accuracy" in metric_sums:
            self.has_accuracy = True
            self.sums[1] += metric_sums["accuracy"] / parts * n
        self.sums[2] += n
        self.committing = False
        return loss, n

    def _check_finite(self, loss: torch.Tensor, local_step: int) -> None:
        """Stop on a NaN/Inf loss -- on every process at once, so none waits forever. The
        same reduction tells every process whether any of them was asked to stop."""
        flags = torch.tensor(
            [0.0 if torch.isfinite(loss) else 1.0, 1.0 if self.stop.requested else 0.0],
            dtype=torch.float64,
        )
        flags = distributed.all_reduce_sum(flags, self.info)
        if flags[1].item() > 0:
            self.stop.requested = True
        if flags[0].item() > 0:
            raise FloatingPointError(
                f"the loss is not finite at epoch {self.epoch + 1} step {local_step}; "
                "lower train.lr or set train.grad_clip"
            )

    def evaluated_model(self) -> nn.Module:
        """What validation scores and best.safetensors holds: the EMA when there is one."""
        return self.model if self.ema is None else self.ema.module

    def score(self, model: nn.Module) -> dict[str, Any]:
        assert self.val_set is not None
        return evaluate_model(
            model,
            self.val_set,
            len(self.classes),
            batch_size=self.batch,
            device=self.info.device,
            precision=self.cfg.precision,
            info=self.info,
            num_workers=self.spec.data.num_workers,
        )

    def validate(self, row: dict[str, Any]) -> None:
        if self.val_set is None:
            return
        report = self.score(self.evaluated_model())
        row["val_loss"] = report["loss"]
        row["val_accuracy"] = report["accuracy"]
        row["val_balanced_accuracy"] = report["balanced_accuracy"]
        if self.ema is not None:
            raw = self.score(self.model)
            row["raw_val_loss"] = raw["loss"]
            row["raw_val_accuracy"] = raw["accuracy"]

    def save(self, *, is_best: bool = False, rng: dict[str, torch.Tensor] | None = None) -> None:
        """Checkpoint the run as it stands (mid-epoch when ``epoch_step`` > 0)."""
        partial = None
        if self.epoch_step:
            partial = {
                "sums": self.sums.tolist(),
                "has_accuracy": self.has_accuracy,
                "seconds": self.epoch_seconds,
            }
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
            epoch_step=self.epoch_step,
            partial=partial,
            rng=rng,
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            ema=self.ema,
        )

    def finish_epoch(self, row: dict[str, Any]) -> None:
        """Record the epoch; rank 0 writes checkpoint, metrics and plot."""
        self.history.append(row)
        self.epoch += 1
        score = row.get("val_accuracy", row.get("train_accuracy"))
        is_best = score is not None and (self.best is None or score > self.best)
        if is_best:
            self.best = score
        if self.info.is_main:
            self.save(is_best=is_best)
            write_metrics(self.run_dir, self.history)
            plot_curves(self.history, self.run_dir / "curves.png")
            parts = [f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}"]
            if "val_loss" in row:
                what = "ema val" if self.ema is not None else "val"
                parts.append(
                    f"{what} loss {row['val_loss']:.4f}, {what} acc {row['val_accuracy']:.2%}"
                )
            parts.append(f"{row['seconds']:.1f}s, {row['images_per_second']:.0f} img/s")
            self.reporter.log(", ".join(parts))
        self.committing = False
        distributed.barrier(self.info)

    def final_report(self) -> dict[str, Any] | None:
        """Per-class evaluation of the best weights on the validation split (rank 0 writes
        ``evaluation.json`` and ``confusion.png``)."""
        if self.val_set is None:
            return None
        best_path = self.run_dir / BEST
        model = self.evaluated_model()
        if best_path.is_file():
            model = copy.deepcopy(model)
            load_weights(model, read_checkpoint(best_path)[0], source=str(best_path))
        report = self.score(model)
        report["classes"] = list(self.classes)
        report["checkpoint"] = str(best_path)
        if self.info.is_main:
            (self.run_dir / "evaluation.json").write_text(
                json.dumps(report, indent=2) + "\n", encoding="utf-8"
            )
            plot_confusion(report, self.run_dir / "confusion.png", title="validation (best)")
        return report

    def interrupted(self, run_dir: Path, rng: dict[str, torch.Tensor]) -> TrainingInterrupted:
        """Save the last finished step (when the weights are consistent) and say so."""
        if self.committing:
            return TrainingInterrupted(run_dir, self.epoch, self.epoch_step, self.step, False)
        self.optimizer.zero_grad(set_to_none=True)
        if self.info.is_main:
            self.committing = True
            try:
                self.save(rng=rng)
            except KeyboardInterrupt:
                return TrainingInterrupted(run_dir, self.epoch, self.epoch_step, self.step, False)
            finally:
                self.committing = False
        return TrainingInterrupted(run_dir, self.epoch, self.epoch_step, self.step, True)


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
    """Train the model ``spec`` describes on ``data_dir`` (``<train split>/<class>/<file>``,
    or the ``data.train_csv`` table; clips for a video model).

    ``spec``: a YAML path, preset name, mapping or spec. ``epochs``/``batch_size`` override
    ``train.epochs``/``train.batch_size``; ``overrides`` sets any spec field by dotted path.
    ``out`` is the run folder (default ``runs/<spec name>``); ``resume`` continues from
    ``out/last.safetensors``. Ctrl-C finishes the current step, saves it and raises
    :class:`TrainingInterrupted` (resume continues exactly from there).
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
    run: _Run | None = None
    try:
        if not resume and (run_dir / LAST).exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it or --out elsewhere"
            )
        train_folder, val_folder = scan_data(Path(data_dir), spec, strict_data, reporter)
        classes = train_folder.classes
        accumulation = spec.train.accumulation_steps
        batch = global_batch_size(
            spec.train.batch_size, len(train_folder), info.world, accumulation
        )

        torch.manual_seed(spec.train.seed)
        state = read_run_checkpoint(run_dir) if resume else None
        spec, model = build_model(spec, len(classes), system, reporter, use_init_from=state is None)
        if state is not None:
            check_same_model(spec, state[1], run_dir)
            load_weights(model, state[0], source=str(run_dir / LAST))
        channels, height, width, frames = model_input(model, data_kind(spec))

        def dataset(folder: ImageFolder, training: bool) -> FolderDataset:
            transform = Transform((height, width), channels, spec.data, train=training)
            return FolderDataset(
                folder, transform, seed=spec.train.seed, strict=strict_data, frames=frames
            )

        balanced = spec.train.class_weights == "balanced"
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
            class_weights=class_loss_weights(train_folder) if balanced else None,
            sample_weights=(
                balanced_weights(train_folder) if spec.data.sampler == "balanced" else None
            ),
        )
        if state is not None:
            run.restore(state[2])
            where = f"epoch {run.epoch}" + (f" step {run.epoch_step}" if run.epoch_step else "")
            reporter.log(f"resuming {escape(str(run_dir))} after {where}")
        run.wrap()
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "spec.yaml").write_text(spec_to_yaml(spec), encoding="utf-8")
            micro = f" ({accumulation} x {batch // accumulation})" if accumulation > 1 else ""
            what = "clips" if frames else "images"
            reporter.log(
                f"training {spec.model.type} on {len(train_folder)} {what}, "
                f"{plural(len(classes), 'class', 'classes')}; "
                f"{plural(spec.train.epochs, 'epoch')} x {plural(run.steps_per_epoch, 'step')} "
                f"of {batch}{micro} on {info.world} x {info.device}; run folder "
                f"{escape(str(run_dir))}"
            )
        if run.epoch >= spec.train.epochs:
            reporter.log(f"{escape(str(run_dir))} already finished {plural(run.epoch, 'epoch')}")
        run.rng_at_step = rng_state()  # after restore: what an interrupt before step 1 keeps
        with run.stop:
            try:
                while run.epoch < spec.train.epochs:
                    row = run.train_epoch()
                    run.validate(row)
                    run.finish_epoch(row)
                    if run.stop.requested and run.epoch < spec.train.epochs:
                        raise _StopNow
            except _StopNow:
                raise run.interrupted(run_dir, rng_state()) from None
            except TrainingInterrupted:
                raise
            except KeyboardInterrupt:
                raise run.interrupted(run_dir, run.rng_at_step) from None
        report = run.final_report()
        if report is not None and info.is_main:
            reporter.log(per_class_summary(report))
        return TrainResult(run_dir, run.history, classes, model, report)
    finally:
        reporter.end_epoch()
        if run is not None:
            run.unwrap()
        distributed.teardown(info)


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


def model_input(model: nn.Module, kind: str = "image") -> tuple[int, int, int, int | None]:
    """``(C, H, W, T)`` the data must deliver: ``T`` is ``None`` for an image model."""
    size = tuple(getattr(model, "input_size", ()))
    if kind == "clip" and len(size) == 4:
        channels, frames, height, width = size
        return channels, height, width, frames
    if kind == "image" and len(size) == 3:
        channels, height, width = size
        return channels, height, width, None
    raise ValueError(
        f"vitzoo train reads {'clip' if kind == 'clip' else 'image'} folders for this spec; "
        f"the model expects input {size}"
    )


def image_input(model: nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image model (kept for callers of the image-only trainer)."""
    channels, height, width, _ = model_input(model, "image")
    return channels, height, width


__all__ = [
    "CheckpointError",
    "DataError",
    "TrainResult",
    "TrainingInterrupted",
    "build_model",
    "train",
]
