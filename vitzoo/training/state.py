"""Run checkpoints: the model file plus a training-state file, both safetensors, never pickle.

``RUN/last.safetensors`` is an ordinary vitzoo checkpoint (``vitzoo.load`` and ``vitzoo
evaluate`` read it) whose metadata also holds the class names and the epoch it ends. The
optimiser moments, objective-only weights (decoders, projectors) and RNG states go to
``RUN/state-<epoch>.safetensors`` as flat tensors with the non-tensor parts as JSON metadata.

Both are written atomically and in this order: new state file, then the model file that names
it, then the old state file is removed. A kill at any moment leaves a model file whose state file
exists, so ``--resume`` always finds a consistent pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from vitzoo.checkpoint import CheckpointError, atomic_save_tensors, read_checkpoint, save
from vitzoo.formats import CLASSES_KEY
from vitzoo.training.lora import adapter_tensors

EPOCH_KEY = "vitzoo.train.epoch"
STATE_KEY = "vitzoo.train.state_file"
STEP_KEY = "vitzoo.train.step"
LAST = "last.safetensors"
BEST = "best.safetensors"
EMA = "ema.safetensors"


@dataclass
class TrainingState:
    """Everything besides the model weights needed to continue a run bit-for-bit."""

    epoch: int  # epochs completed
    step: int  # optimiser steps completed
    optimizer: dict[str, Any]
    objective_extra: dict[str, torch.Tensor]
    rng: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    best_accuracy: float | None
    #: Steps finished inside epoch ``epoch + 1`` (a run stopped by Ctrl-C mid-epoch) and that
    #: epoch's running sums, so the resumed epoch's row comes out as an uninterrupted one's.
    epoch_step: int = 0
    partial: dict[str, Any] | None = None
    #: The fp16 gradient scaler's state (scale, growth tracker), when one is used.
    scaler: dict[str, Any] | None = None
    #: The weight average's tensors (``ema.<name>``) and its update count.
    ema: dict[str, torch.Tensor] | None = None
    ema_updates: int = 0
    #: ``train.lora``: the unmerged base and adapter tensors (``lora.<layer>.<name>``).
    lora: dict[str, torch.Tensor] | None = None


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> tensors ``optim.<param>.<key>`` + JSON-safe rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        states = [tensors[k].to(torch.uint8) for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def objective_extra(objective: nn.Module) -> dict[str, torch.Tensor]:
    """Objective weights that are not the model's own (decoders, projectors, EMA copies)."""
    return {
        f"objective.{k}": v.detach().cpu().contiguous()
        for k, v in objective.state_dict().items()
        if not k.startswith("model.")
    }


def save_run_checkpoint(
    run_dir: Path,
    model: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    step: int,
    classes: list[str],
    history: list[dict[str, Any]],
    best_accuracy: float | None,
    is_best: bool,
    epoch_step: int = 0,
    partial: dict[str, Any] | None = None,
    rng: dict[str, torch.Tensor] | None = None,
    scaler: dict[str, Any] | None = None,
    ema: Any = None,
) -> Path:
    """Write state-<epoch>[-<step>], then last (naming it), then drop older state files.

    ``epoch_step`` > 0 saves a run stopped inside an epoch (``partial``: that epoch's running
    sums); ``rng`` replaces the current RNG state (the state at the last finished step);
    ``ema`` (a :class:`~vitzoo.training.ema.ModelEma`) is saved in the state file for resuming,
    and as ``ema.safetensors``; ``best.safetensors`` then holds the average, the weights
    validation scored.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{epoch_step:06d}" if epoch_step else ""
    state_name = f"state-{epoch:04d}{suffix}.safetensors"
    tensors, optimizer_meta = _state_tensors(optimizer, objective, rng, ema)
    progress = _progress(epoch, step, best_accuracy, epoch_step, partial, scaler, ema)
    metadata = {
        "vitzoo.train.optimizer": json.dumps(optimizer_meta),
        "vitzoo.train.progress": json.dumps(progress),
        "vitzoo.train.history": json.dumps(history),
    }
    atomic_save_tensors(tensors, run_dir / state_name, metadata)
    model_meta = {
        CLASSES_KEY: json.dumps(classes),
        EPOCH_KEY: str(epoch),
        STEP_KEY: str(step),
        STATE_KEY: state_name,
    }
    last = save(model, run_dir / LAST, metadata=model_meta)
    if ema is not None and not epoch_step:
        save(ema.module, run_dir / EMA, metadata=model_meta)
    if is_best:
        save(model if ema is None else ema.module, run_dir / BEST, metadata=model_meta)
    for old in run_dir.glob("state-*.safetensors"):
        if old.name != state_name:
            old.unlink(missing_ok=True)
    return last


def _state_tensors(
    optimizer: torch.optim.Optimizer,
    objective: nn.Module,
    rng: dict[str, torch.Tensor] | None,
    ema: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state file's tensors (optimiser moments, objective-only weights, RNG states, the
    weight average) and the optimiser's JSON-safe rest."""
    tensors, optimizer_meta = flatten_optimizer(optimizer.state_dict())
    tensors.update(objective_extra(objective))
    tensors.update(adapter_tensors(objective))
    tensors.update(rng if rng is not None else rng_state())
    if ema is not None:
        tensors.update(ema.state_tensors())
    return tensors, optimizer_meta


def _progress(
    epoch: int,
    step: int,
    best_accuracy: float | None,
    epoch_step: int,
    partial: dict[str, Any] | None,
    scaler: dict[str, Any] | None,
    ema: Any,
) -> dict[str, Any]:
    """Where the run stands (the state file's ``vitzoo.train.progress``)."""
    progress: dict[str, Any] = {"epoch": epoch, "step": step, "best_accuracy": best_accuracy}
    if epoch_step:
        progress.update(epoch_step=epoch_step, partial=partial)
    if scaler is not None:
        progress["scaler"] = scaler
    if ema is not None:
        progress["ema_updates"] = ema.updates
    return progress


class RunCheckpoint(NamedTuple):
    """What ``--resume`` reads: the model's tensors and metadata, and the training state."""

    weights: dict[str, torch.Tensor]
    metadata: dict[str, str]
    state: TrainingState


def read_run_checkpoint(run_dir: Path) -> RunCheckpoint:
    """Model tensors + metadata of ``RUN/last.safetensors`` and the training state it names."""
    last = run_dir / LAST
    if not last.is_file():
        raise CheckpointError(f"{run_dir}: nothing to resume (no {LAST})")
    tensors, metadata = read_checkpoint(last)
    state_name = metadata.get(STATE_KEY)
    if state_name is None:
        raise CheckpointError(f"{last}: not a training checkpoint (no {STATE_KEY} metadata)")
    state_tensors, state_meta = read_checkpoint(run_dir / state_name)
    progress = json.loads(state_meta["vitzoo.train.progress"])
    if progress["epoch"] != int(metadata[EPOCH_KEY]) or (
        STEP_KEY in metadata and progress["step"] != int(metadata[STEP_KEY])
    ):
        raise CheckpointError(
            f"{run_dir}: {LAST} ends epoch {metadata[EPOCH_KEY]} but {state_name} ends "
            f"epoch {progress['epoch']}"
        )
    state = TrainingState(
        epoch=progress["epoch"],
        step=progress["step"],
        optimizer=unflatten_optimizer(
            state_tensors, json.loads(state_meta["vitzoo.train.optimizer"])
        ),
        objective_extra={
            k.removeprefix("objective."): v
            for k, v in state_tensors.items()
            if k.startswith("objective.")
        },
        rng={k: v for k, v in state_tensors.items() if k.startswith("rng.")},
        history=json.loads(state_meta.get("vitzoo.train.history", "[]")),
        best_accuracy=progress.get("best_accuracy"),
        epoch_step=int(progress.get("epoch_step", 0)),
        partial=progress.get("partial"),
        scaler=progress.get("scaler"),
        ema={k: v for k, v in state_tensors.items() if k.startswith("ema.")} or None,
        ema_updates=int(progress.get("ema_updates", 0)),
        lora={k: v for k, v in state_tensors.items() if k.startswith("lora.")} or None,
    )
    return RunCheckpoint(tensors, metadata, state)


def class_names(metadata: dict[str, str], num_classes: int) -> list[str]:
    """Stored class names, or ``class_<i>`` for checkpoints saved outside ``vitzoo train``."""
    raw = metadata.get(CLASSES_KEY)
    if raw is not None:
        names = json.loads(raw)
        if len(names) == num_classes:
            return names
    return [f"class_{i}" for i in range(num_classes)]
