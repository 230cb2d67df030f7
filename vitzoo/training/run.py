"""One training run's moving parts and its loop: epochs of steps, validation, checkpoints.

:func:`run_epochs` is the loop :func:`vitzoo.training.trainer.train` calls once the run is set
up; :class:`TrainingRun` holds what the loop changes (weights, optimiser, scaler, EMA, progress)
and is also what a checkpoint saves and a resumed run restores.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from rich.markup import escape
from torch import nn

from vitzoo.checkpoint import CheckpointError, load
from vitzoo.data.folders import EpochBatches, FolderDataset, generator, loader
from vitzoo.plugins import PluginSystem
from vitzoo.precision import autocast
from vitzoo.spec import SpecBase
from vitzoo.terminal import plural
from vitzoo.training import distributed
from vitzoo.training.ema import ModelEma
from vitzoo.training.evaluation import Validation, is_new_best, metric_value
from vitzoo.training.freeze import hold_frozen_norms
from vitzoo.training.interrupt import StopNow, StopRequest, TrainingInterrupted
from vitzoo.training.lora import restore_adapter_tensors
from vitzoo.training.metrics import plot_curves, write_metrics
from vitzoo.training.objective import make_objective
from vitzoo.training.optim import lr_at, make_optimizer, set_lr
from vitzoo.training.progress import Reporter
from vitzoo.training.sharded_state import (
    ShardedTrainingState,
    load_sharded_state,
    save_sharded_run_checkpoint,
)
from vitzoo.training.sharding import (
    accumulating,
    gathered,
    make_sharding,
    move_unsharded,
    reshard_all,
)
from vitzoo.training.state import (
    LAST,
    TrainingState,
    restore_rng,
    rng_state,
    save_run_checkpoint,
)


def objective_for_run(
    spec: SpecBase,
    model: nn.Module,
    system: PluginSystem,
    class_weights: torch.Tensor | None,
    reporter: Reporter,
) -> nn.Module:
    """The spec's training objective around ``model`` (balanced class weights when asked)."""
    objective = make_objective(spec, model, system, class_weights=class_weights)
    if class_weights is not None and getattr(objective, "class_weights", None) is None:
        reporter.log(
            f"[yellow]warning:[/] train.class_weights=balanced has no effect: objective "
            f"{type(objective).__name__} takes no class weights"
        )
    return objective


class StepResult(NamedTuple):
    """One optimiser step: its mean loss and the samples this process fed it."""

    loss: float
    samples: int


@dataclass
class EpochTotals:
    """The epoch in progress: running sums (loss*n, accuracy*n, n) and seconds so far.

    A checkpoint written inside an epoch stores them (:meth:`partial`), so the resumed epoch's
    row comes out as an uninterrupted one's.
    """

    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    has_accuracy: bool = False
    seconds: float = 0.0

    def add(self, loss: float, accuracy: float | None, samples: int) -> None:
        self.sums[0] += loss * samples
        if accuracy is not None:
            self.has_accuracy = True
            self.sums[1] += accuracy * samples
        self.sums[2] += samples

    def partial(self) -> dict[str, Any]:
        return {
            "sums": self.sums.tolist(),
            "has_accuracy": self.has_accuracy,
            "seconds": self.seconds,
        }

    @classmethod
    def from_partial(cls, partial: dict[str, Any]) -> EpochTotals:
        return cls(
            torch.tensor(partial.get("sums", [0.0, 0.0, 0.0]), dtype=torch.float64),
            bool(partial.get("has_accuracy", False)),
            float(partial.get("seconds", 0.0)),
        )


class TrainingRun:
    """One training run's moving parts; :func:`run_epochs` drives it epoch by epoch."""

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
        self.train_set = train_set
        self.info, self.reporter, self.run_dir = info, reporter, run_dir
        self.system = system
        self.sample_weights = sample_weights
        #: FSDP2 sharding across the processes (``train.strategy: fsdp`` under torchrun).
        self.sharding = make_sharding(self.cfg, info)
        #: The run state goes through torch.distributed.checkpoint (``strategy: fsdp``, at any
        #: world size, so a sharded run resumes on one process and back).
        self.sharded_state = self.cfg.strategy == "fsdp"
        self.validation = None
        if val_set is not None:
            self.validation = Validation(
                val_set,
                classes,
                batch,
                info,
                self.cfg.precision,
                spec.data.num_workers,
                lockstep=self.sharding is not None,
            )
        self.objective, self.ema = self.place(model, class_weights)
        self.optimizer = make_optimizer(self.objective, model, self.cfg)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.cfg.precision == "fp16")
        self.steps_per_epoch = len(train_set) // batch
        self.total_steps = self.steps_per_epoch * self.cfg.epochs
        self.warmup_steps = round(self.cfg.warmup_epochs * self.steps_per_epoch)
        self.history: list[dict[str, Any]] = []
        self.epoch, self.step, self.best = 0, 0, None
        self.runner: nn.Module = self.objective
        #: Steps finished inside the epoch in progress, and its running totals.
        self.epoch_step = 0
        self.totals = EpochTotals()
        self.committing = False
        self.rng_at_step = rng_state()
        self.stop = StopRequest(reporter)

    # ----------------------------------------------------------------------------------------
    # Set-up
    # ----------------------------------------------------------------------------------------
    def place(
        self, model: nn.Module, class_weights: torch.Tensor | None
    ) -> tuple[nn.Module, ModelEma | None]:
        """The objective around ``model`` and the weight EMA, on the run's device -- sharded
        when the run is (the optimiser, made next, then holds the shards)."""
        device = self.info.device
        if self.sharding is None:
            model.to(device)  # a sharded model goes to the device shard by shard
        if self.cfg.grad_checkpointing:
            model.set_grad_checkpointing(True)
        objective = objective_for_run(self.spec, model, self.system, class_weights, self.reporter)
        ema = ModelEma(model, self.cfg.ema_decay) if self.cfg.ema_decay else None
        if self.sharding is None:
            objective.to(device)
            return objective, ema
        for module in (objective, ema.module if ema is not None else None):
            if module is not None:
                self.sharding.shard(module)
                move_unsharded(module, device)
        return objective, ema

    def restore(self, state: TrainingState) -> None:
        """Continue where ``state`` ended (call before :meth:`wrap`)."""
        if isinstance(state, ShardedTrainingState):
            load_sharded_state(state, self.objective, self.optimizer, self.ema, self.info)
        elif self.sharding is not None:
            raise CheckpointError(
                f"{self.run_dir}: this run's state was written without train.strategy: fsdp "
                "and cannot be loaded into shards; resume it with the strategy it was started "
                "with, or start a new run from its weights (train.init_from)"
            )
        else:
            self.optimizer.load_state_dict(state.optimizer)
            if state.objective_extra:
                own = {f"model.{k}": v for k, v in self.model.state_dict().items()}
                self.objective.load_state_dict({**own, **state.objective_extra})
            if self.ema is not None and state.ema:
                self.ema.load_state_tensors(state.ema, state.ema_updates)
        self.epoch, self.step, self.best = state.epoch, state.step, state.best_accuracy
        self.history = list(state.history)
        if state.epoch_step:
            self.epoch_step = state.epoch_step
            self.totals = EpochTotals.from_partial(state.partial or {})
        if state.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.scaler)
        if getattr(state, "lora", None):
            restore_adapter_tensors(self.objective, state.lora)
        restore_rng(state.rng)

    def wrap(self) -> None:
        """torch.compile and DistributedDataParallel, as configured (a sharded objective was
        wrapped when it was sharded)."""
        if self.cfg.compile:
            self.objective.compile()
        if self.info.enabled and self.sharding is None:
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

    # ----------------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.cfg)

    def train_epoch(self) -> dict[str, Any]:
        """The remaining steps of the current epoch; its row of training metrics."""
        info, cfg = self.info, self.cfg
        self.objective.train()
        hold_frozen_norms(self.model)  # train.freeze: frozen BatchNorm statistics stay
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
        started = time.perf_counter() - self.totals.seconds
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
            self.totals.seconds = time.perf_counter() - started
            self.reporter.step(self.epoch_step, loss, n * info.world, self.lr(self.step - 1))
            if self.stop.requested and self.epoch_step < self.steps_per_epoch:
                raise StopNow
        self.reporter.end_epoch()
        # Until the epoch's checkpoint is saved, an interruption cannot save a consistent state.
        self.committing = True
        sums = self.totals.sums.clone()
        distributed.all_reduce_sum(sums, info)
        seconds = time.perf_counter() - started
        row: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": self.lr(max(self.step - 1, 0)),
            "train_loss": float(sums[0] / max(sums[2], 1)),
        }
        if self.totals.has_accuracy:
            row["train_accuracy"] = float(sums[1] / max(sums[2], 1))
        row["seconds"] = round(seconds, 3)
        row["images_per_second"] = round(float(sums[2]) / max(seconds, 1e-9), 1)
        self.epoch_step = 0
        self.totals = EpochTotals()
        return row

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> StepResult:
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
            sync: Any = contextlib.nullcontext()
            if not last and isinstance(self.runner, nn.parallel.DistributedDataParallel):
                sync = self.runner.no_sync()
            elif self.sharding is not None:
                sync = accumulating(self.objective, last)
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
        accuracy = metric_sums["accuracy"] / parts if "accuracy" in metric_sums else None
        self.totals.add(loss, accuracy, n)
        self.committing = False
        return StepResult(loss, n)

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

    # ----------------------------------------------------------------------------------------
    # Evaluation
    # ----------------------------------------------------------------------------------------
    def evaluated_model(self) -> nn.Module:
        """What validation scores and best.safetensors holds: the EMA when there is one."""
        return self.model if self.ema is None else self.ema.module

    @contextlib.contextmanager
    def scoring(self) -> Iterator[None]:
        """Sharded: the objective's root parameters (the model's non-block ones) gathered
        while the model runs outside the objective, and everything freed afterwards."""
        if self.sharding is None:
            yield
            return
        with gathered(self.objective):
            yield
        if self.ema is not None:
            reshard_all(self.ema.module)

    def validate(self) -> dict[str, Any]:
        """The epoch's validation columns (none without a validation split)."""
        if self.validation is None:
            return {}
        raw = self.model if self.ema is not None else None
        with self.scoring():
            return self.validation.columns(self.evaluated_model(), raw)

    def final_report(self) -> dict[str, Any] | None:
        """Per-class evaluation of the best weights on the validation split (None without one)."""
        if self.validation is None:
            return None
        best = self.sharded_copy if self.sharding is not None else None
        with self.scoring():
            return self.validation.final_report(self.evaluated_model(), self.run_dir, best)

    def sharded_copy(self, path: Path) -> nn.Module:
        """The model file ``path`` loaded and sharded like the run's model (every process)."""
        assert self.sharding is not None
        model = self.sharding.shard(load(path, system=self.system))
        move_unsharded(model, self.info.device)
        return model

    def trained_model(self) -> nn.Module:
        """The trained model as one plain module: a sharded run's is read back from
        ``last.safetensors`` (its own parameters are shards tied to the process group)."""
        if self.sharding is None:
            return self.model
        return load(self.run_dir / LAST, system=self.system)

    # ----------------------------------------------------------------------------------------
    # Checkpoints
    # ----------------------------------------------------------------------------------------
    def record(self, row: dict[str, Any]) -> bool:
        """Add the finished epoch to the history; whether it is the best so far."""
        is_best = is_new_best(self.history, row, self.cfg.best_metric)  # ties: lower val loss
        self.history.append(row)
        self.epoch += 1
        if is_best:
            self.best = metric_value(row, self.cfg.best_metric)
        return is_best

    @property
    def collective_save(self) -> bool:
        """A sharded state is written by every process at once (else by rank 0 alone)."""
        return self.sharded_state and self.info.enabled

    def save(self, *, is_best: bool = False, rng: dict[str, torch.Tensor] | None = None) -> None:
        """Checkpoint the run as it stands (mid-epoch when ``epoch_step`` > 0)."""
        save = save_run_checkpoint
        if self.sharded_state:
            save = functools.partial(save_sharded_run_checkpoint, info=self.info)
        save(
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
            partial=self.totals.partial() if self.epoch_step else None,
            rng=rng,
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            ema=self.ema,
        )

    def checkpoint(self, row: dict[str, Any], is_best: bool) -> None:
        """Rank 0 writes the checkpoint (all processes, when it is sharded), metrics and
        plot of the epoch just recorded."""
        if self.collective_save:
            self.save(is_best=is_best)
        if self.info.is_main:
            if not self.collective_save:
                self.save(is_best=is_best)
            write_metrics(self.run_dir, self.history)
            plot_curves(self.history, self.run_dir / "curves.png", self.cfg.best_metric)
            self.reporter.log(self.epoch_line(row))
        self.committing = False
        distributed.barrier(self.info)

    def epoch_line(self, row: dict[str, Any]) -> str:
        parts = [f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}"]
        if "val_loss" in row:
            what = "ema val" if self.ema is not None else "val"
            parts.append(f"{what} loss {row['val_loss']:.4f}, {what} acc {row['val_accuracy']:.2%}")
        parts.append(f"{row['seconds']:.1f}s, {row['images_per_second']:.0f} img/s")
        return ", ".join(parts)

    def interrupted(
        self, rng: dict[str, torch.Tensor], *, together: bool = True
    ) -> TrainingInterrupted:
        """Save the last finished step (when the weights are consistent) and say so.

        ``together``: every process stopped at the same step boundary (a requested stop), so
        a sharded state, which every process writes, can be saved; after an abrupt stop the
        others may be anywhere, and the previous checkpoint is kept.
        """
        run_dir = self.run_dir
        if self.committing or (self.collective_save and not together):
            return TrainingInterrupted(run_dir, self.epoch, self.epoch_step, self.step, False)
        self.optimizer.zero_grad(set_to_none=True)
        if self.info.is_main or self.collective_save:
            self.committing = True
            try:
                self.save(rng=rng)
            except KeyboardInterrupt:
                return TrainingInterrupted(run_dir, self.epoch, self.epoch_step, self.step, False)
            finally:
                self.committing = False
        return TrainingInterrupted(run_dir, self.epoch, self.epoch_step, self.step, True)


def run_epochs(run: TrainingRun) -> None:
    """Train, validate and checkpoint each remaining epoch.

    Ctrl-C saves the last finished step and raises :class:`TrainingInterrupted`: at a step
    boundary (a requested stop) with the RNG as it is, in the middle of a step with the RNG as
    that step found it, so the resumed run replays the step exactly.
    """
    epochs = run.cfg.epochs
    if run.epoch >= epochs:
        where = escape(str(run.run_dir))
        run.reporter.log(f"{where} already finished {plural(run.epoch, 'epoch')}")
    run.rng_at_step = rng_state()  # after restore: what an interrupt before step 1 keeps
    with run.stop:
        try:
            while run.epoch < epochs:
                row = run.train_epoch()
                row.update(run.validate())
                run.checkpoint(row, is_best=run.record(row))
                if run.stop.requested and run.epoch < epochs:
                    raise StopNow
        except StopNow:
            raise run.interrupted(rng_state()) from None
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            raise run.interrupted(run.rng_at_step, together=False) from None
