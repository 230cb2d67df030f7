"""``vitzoo train``: fit a spec's model on an image folder, with checkpoints, metrics and resume.

:func:`train` behaves the same in one process and under ``torchrun``: each process takes its
slice of every global batch, DistributedDataParallel averages the gradients (or, with
``train.strategy: fsdp``, FSDP2 shards the weights, gradients and optimiser state:
:mod:`~vitzoo.training.sharding`, :mod:`~vitzoo.training.sharded_state`), and only rank 0
writes files outside a sharded state. Determinism: the model is initialised from ``train.seed``; data order and augmentation
are derived from ``(seed, epoch, sample)`` (see :mod:`vitzoo.data.folders`); the global RNG
(dropout, drop-path, mixup) is saved in every checkpoint, together with the weight EMA and the
fp16 gradient scale. Together these make a resumed run end with the same weights as an
uninterrupted one -- also after Ctrl-C in the middle of an epoch, which saves the last finished
step (the data loader's worker seed comes from its own generator, so skipping the finished
batches replays the global RNG exactly).

The steps live in their own modules: :mod:`~vitzoo.training.preparation` (data splits, batch
size, model), :mod:`~vitzoo.training.run` (the loop and its checkpoints),
:mod:`~vitzoo.training.evaluation` (validation and the final report) and
:mod:`~vitzoo.training.interrupt` (Ctrl-C).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

from vitzoo.bench.timing import oversubscription
from vitzoo.builder import resolve_spec
from vitzoo.checkpoint import CheckpointError, load_weights
from vitzoo.data.folders import balanced_weights
from vitzoo.data.images import DataError
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.precision import slow_bf16_note
from vitzoo.spec import SpecBase, spec_to_yaml
from vitzoo.terminal import plural
from vitzoo.training import distributed
from vitzoo.training.evaluation import per_class_summary
from vitzoo.training.interrupt import TrainingInterrupted
from vitzoo.training.preparation import (
    Splits,
    build_model,
    check_same_model,
    class_loss_weights,
    data_kind,
    global_batch_size,
    input_config,
    make_dataset,
    scan_data,
    with_model_of_weights,
)
from vitzoo.training.progress import Reporter
from vitzoo.training.run import TrainingRun, run_epochs
from vitzoo.training.sharded_state import read_resume_point
from vitzoo.training.state import LAST
from vitzoo.training.tuning import tune_model


@dataclass
class TrainResult:
    """What a finished run leaves: where, the per-epoch history, and the trained model."""

    run_dir: Path
    history: list[dict[str, Any]]
    classes: list[str]
    model: nn.Module = field(repr=False)
    #: Per-class evaluation of best.safetensors on the validation split (None without one).
    report: dict[str, Any] | None = field(default=None, repr=False)
    #: Whether this process is rank 0 (under torchrun only rank 0 reports the result).
    is_main: bool = True

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


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
    sources: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train the model ``spec`` describes on ``data_dir`` (``<train split>/<class>/<file>``,
    or the ``data.train_csv`` table; clips for a video model).

    ``spec``: a YAML path, preset name, mapping or spec. ``epochs``/``batch_size`` override
    ``train.epochs``/``train.batch_size``; ``overrides`` sets any spec field by dotted path.
    ``sources`` names where an override came from (``{"train.lr": "--lr -1"}``), for errors;
    ``out`` is the run folder (default ``runs/<spec name>``); ``resume`` continues from
    ``out/last.safetensors``. Ctrl-C finishes the current step, saves it and raises
    :class:`TrainingInterrupted` (resume continues exactly from there).
    """
    system = system or get_plugin_system()
    spec, run_dir = resolve_run_spec(spec, epochs, batch_size, overrides, out, system, sources)
    info = distributed.setup(spec.train.device, spec.train.dist_timeout)
    reporter = Reporter(console, enabled=info.is_main, log_every=spec.train.log_every)
    run: TrainingRun | None = None
    try:
        check_run_folder(run_dir, resume)
        splits = scan_data(Path(data_dir), spec, strict_data, reporter)
        run = set_up_run(spec, splits, run_dir, info, reporter, system, resume, strict_data)
        announce(run, splits)
        run_epochs(run)
        return finish(run)
    except Exception as exc:
        # a process that died or hangs: one plain line, so the job ends instead of waiting
        if distributed.lost_peer(exc, info):
            raise distributed.peer_failure(exc, info) from exc
        raise
    finally:
        reporter.end_epoch()
        if run is not None:
            run.unwrap()
        distributed.teardown(info)


# --------------------------------------------------------------------------------------------
# The steps of train()
# --------------------------------------------------------------------------------------------
def resolve_run_spec(
    spec: Any,
    epochs: int | None,
    batch_size: int | None,
    overrides: Mapping[str, Any] | None,
    out: str | Path | None,
    system: PluginSystem,
    given_sources: Mapping[str, str] | None = None,
) -> tuple[SpecBase, Path]:
    """The spec with the command line's changes applied (each error names the option that set
    the value), and the run folder."""
    changes = dict(overrides or {})
    sources = {k: f"--set {k}={v}" for k, v in changes.items()} | dict(given_sources or {})
    if epochs is not None:
        changes["train.epochs"] = epochs
        sources["train.epochs"] = f"--epochs {epochs}"
    if batch_size is not None:
        changes["train.batch_size"] = batch_size
        sources["train.batch_size"] = f"--batch-size {batch_size}"
    name = Path(spec).stem if isinstance(spec, str | Path) else None
    spec, changes, sources = with_model_of_weights(spec, changes, sources, system)
    spec = resolve_spec(spec, changes, system=system, sources=sources)
    run_dir = Path(out) if out is not None else Path("runs") / (name or spec.model.type)
    return spec, run_dir


def check_run_folder(run_dir: Path, resume: bool) -> None:
    """A new run never overwrites an old one."""
    if not resume and (run_dir / LAST).exists():
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or --out elsewhere"
        )


def set_up_run(
    spec: SpecBase,
    splits: Splits,
    run_dir: Path,
    info: distributed.DistInfo,
    reporter: Reporter,
    system: PluginSystem,
    resume: bool,
    strict_data: bool,
) -> TrainingRun:
    """Model, objective, optimiser and datasets -- restored from ``run_dir`` when resuming.

    The order is part of the run's determinism: seed, build the model, (load the resumed
    weights), build the objective and optimiser, then restore the saved RNG state over all of it.
    """
    classes = splits.train.classes
    batch = global_batch_size(
        spec.train.batch_size, len(splits.train), info.world, spec.train.accumulation_steps
    )
    torch.manual_seed(spec.train.seed)
    saved = read_resume_point(run_dir) if resume else None
    spec, model = build_model(
        spec, len(classes), system, reporter, use_init_from=saved is None, classes=classes
    )
    if saved is not None:
        check_same_model(spec, saved.metadata, run_dir)
        if saved.weights:  # a sharded state holds the weights itself (run.restore loads them)
            load_weights(model, saved.weights, source=str(run_dir / LAST))
    tune_model(spec, model, reporter.log)
    data = input_config(model, reporter, data_kind(spec))
    balanced = spec.train.class_weights == "balanced"
    seed = spec.train.seed
    run = TrainingRun(
        spec,
        model,
        make_dataset(splits.train, data, seed=seed, train=True, strict=strict_data),
        (
            make_dataset(splits.val, data, seed=seed, train=False, strict=strict_data)
            if splits.val is not None
            else None
        ),
        classes,
        batch,
        info,
        reporter,
        run_dir,
        system,
        class_weights=class_loss_weights(splits.train) if balanced else None,
        sample_weights=balanced_weights(splits.train) if spec.data.sampler == "balanced" else None,
    )
    if saved is not None:
        run.restore(saved.state)
        where = f"epoch {run.epoch}" + (f" step {run.epoch_step}" if run.epoch_step else "")
        reporter.log(f"resuming {escape(str(run_dir))} after {where}")
    run.wrap()
    return run


def announce(run: TrainingRun, splits: Splits) -> None:
    """Rank 0 creates the run folder, writes ``spec.yaml`` and says what is about to run."""
    if not run.info.is_main:
        return
    spec, batch, info = run.spec, run.batch, run.info
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "spec.yaml").write_text(spec_to_yaml(spec), encoding="utf-8")
    accumulation = spec.train.accumulation_steps
    micro = f" ({accumulation} x {batch // accumulation})" if accumulation > 1 else ""
    what = "clips" if splits.train.kind == "clip" else "images"
    sharded = " (fsdp: weights, gradients and optimiser state sharded)" if run.sharding else ""
    note = slow_bf16_note(info.device) if spec.train.precision == "bf16" else None
    if note is not None:
        run.reporter.log(f"[yellow]warning:[/] train.precision=bf16: {escape(note)}")
    threads, busy = cpu_threads(info.device)
    if busy is not None:
        run.reporter.log(f"[yellow]warning:[/] {escape(busy)}")
    run.reporter.log(
        f"training {spec.model.type} on {len(splits.train)} {what}, "
        f"{plural(len(run.classes), 'class', 'classes')}; "
        f"{plural(spec.train.epochs, 'epoch')} x {plural(run.steps_per_epoch, 'step')} "
        f"of {batch}{micro} on {info.world} x {info.device}{sharded}{threads}; run folder "
        f"{escape(str(run.run_dir))}"
    )


def cpu_threads(device: torch.device) -> tuple[str, str | None]:
    """(`` (2 threads)`` for the start line, a warning when the machine is too busy for them:
    :func:`vitzoo.bench.timing.oversubscription`). The count is said, not changed: a resumed
    run must compute exactly as the first one did, so the user chooses (``OMP_NUM_THREADS``)."""
    if device.type != "cpu":
        return "", None
    threads = torch.get_num_threads()
    return f" ({plural(threads, 'thread')})", oversubscription(threads, what="training")


def finish(run: TrainingRun) -> TrainResult:
    """Score the best weights per class (with a validation split) and collect the results."""
    report = run.final_report()
    if report is not None and run.info.is_main:
        run.reporter.log(per_class_summary(report))
    lora = run.spec.train.lora
    if lora is not None and lora.save_adapter and run.info.is_main:
        from vitzoo.training.lora import ADAPTER_FILE, save_adapter

        save_adapter(run.model, run.run_dir / ADAPTER_FILE)
    return TrainResult(
        run.run_dir, run.history, run.classes, run.trained_model(), report, is_main=run.info.is_main
    )


__all__ = [
    "CheckpointError",
    "DataError",
    "TrainResult",
    "TrainingInterrupted",
    "build_model",
    "train",
]
