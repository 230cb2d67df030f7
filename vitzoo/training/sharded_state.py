"""Run state of a ``train.strategy: fsdp`` run, through ``torch.distributed.checkpoint`` (DCP).

``RUN/state-<epoch>[-<step>].dcp/`` is a DCP checkpoint of the objective's weights (the model's
and any objective-only part), the AdamW moments and the weight EMA: each process writes the
shards it holds, in parallel (``__<rank>_0.distcp``), and DCP's ``.metadata`` records every
tensor's global shape and where each piece lies -- so a run saved by N processes resumes on
any number of processes, one included (DCP reads the pieces each new shard needs). Beside the
shards, ``vitzoo-run.safetensors`` holds what is not sharded: the RNG state, the progress
(epoch, step, best score, the epoch in progress), the history and the fp16 scaler, as
safetensors with JSON metadata. Nothing vitzoo writes is pickled; DCP's own ``.metadata`` index
is a pickle (a PyTorch format fact), so it is read with an unpickler that accepts only DCP's
metadata classes, never arbitrary objects.

``RUN/last.safetensors`` (and ``best``/``ema``) stay single self-describing model files: the
full state dict is gathered to rank 0 one tensor at a time into host memory and saved there,
so ``vitzoo.load`` reads them on one process.

Atomic like the single-process state (:mod:`vitzoo.training.state`): the shards are written
under ``RUN/.state-<...>.partial/``; when every process has written its part, rank 0 adds the
run file and renames the folder into place, then writes ``last.safetensors`` naming it, then
removes older states. A process killed at any moment leaves ``last.safetensors`` naming a
complete state (a partial folder is never named, and is cleared by the next save).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from vitzoo.checkpoint import CheckpointError, atomic_save_tensors, read_checkpoint, save
from vitzoo.formats import CLASSES_KEY
from vitzoo.training import distributed
from vitzoo.training.distributed import DistInfo
from vitzoo.training.ema import ModelEma
from vitzoo.training.sharding import full_state_dict, reshard_all
from vitzoo.training.state import (
    BEST,
    EMA,
    EPOCH_KEY,
    LAST,
    STATE_KEY,
    STEP_KEY,
    RunCheckpoint,
    TrainingState,
    read_run_checkpoint,
    rng_state,
)

SUFFIX = ".dcp"
RUN_FILE = "vitzoo-run.safetensors"
PROGRESS_KEY = "vitzoo.train.progress"
HISTORY_KEY = "vitzoo.train.history"
CONTENTS_KEY = "vitzoo.train.contents"
WORLD_KEY = "vitzoo.train.world"


@dataclass
class ShardedTrainingState(TrainingState):
    """A :class:`TrainingState` whose tensors stay in a DCP folder until the run loads them
    into its own (possibly differently sharded) modules with :func:`load_sharded_state`."""

    directory: Path = field(default_factory=Path)
    #: Which parts the folder holds: ``objective``, ``optimizer`` (absent before the first
    #: step: AdamW has no moments yet) and ``ema``.
    contents: tuple[str, ...] = ()


def is_sharded_state(name: str) -> bool:
    return name.endswith(SUFFIX)


def state_name(epoch: int, epoch_step: int) -> str:
    suffix = f"-{epoch_step:06d}" if epoch_step else ""
    return f"state-{epoch:04d}{suffix}{SUFFIX}"


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------
def live_state(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: ModelEma | None,
    contents: tuple[str, ...],
) -> dict[str, Any]:
    """The run's sharded tensors, keyed by name (DCP saves them or loads into them in place).

    Optimizer state is keyed by parameter name, not position, so it does not depend on how
    parameters are split across processes; its ``param_groups`` (plain numbers the spec
    rebuilds) are left out so the folder holds tensors only.
    """
    state: dict[str, Any] = {"objective": get_model_state_dict(objective)}
    if "optimizer" in contents:
        state["optimizer"] = {"state": get_optimizer_state_dict(objective, optimizer)["state"]}
    if "ema" in contents and ema is not None:
        state["ema"] = get_model_state_dict(ema.module)
    return state


def write_state_folder(
    run_dir: Path,
    name: str,
    state: dict[str, Any],
    run_tensors: dict[str, torch.Tensor],
    run_metadata: dict[str, str],
    info: DistInfo,
) -> str:
    """Every process writes its shards under a partial folder; rank 0 completes and renames
    it. Returns the folder's final name (a new name if ``name`` is taken: a state is never
    overwritten in place, since ``last.safetensors`` may still name it)."""
    partial = run_dir / f".{name}.partial"
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".state-*.partial"):  # left by a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
        partial.mkdir()
    distributed.barrier(info)
    with _single_process_is_meant():
        dcp.save(
            state,
            storage_writer=dcp.FileSystemWriter(partial, sync_files=True),
            no_dist=not info.enabled,
        )
    final = name
    if info.is_main:
        atomic_save_tensors(run_tensors, partial / RUN_FILE, run_metadata)
        count = 1
        while (run_dir / final).exists():
            final = f"{name.removesuffix(SUFFIX)}.{count}{SUFFIX}"
            count += 1
        _fsync_dir(partial)
        os.replace(partial, run_dir / final)
        _fsync_dir(run_dir)
    return final


@contextlib.contextmanager
def _single_process_is_meant() -> Iterator[None]:
    """DCP warns on every save/load without a process group; one process is a normal way
    to continue a sharded run, not a mistake to warn about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (new files, a rename) durable before anything names them."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_sharded_run_checkpoint(
    run_dir: Path,
    model: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    info: DistInfo,
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
    ema: ModelEma | None = None,
) -> Path:
    """Write the state folder, then ``last`` naming it (and ``ema``/``best``), then drop older
    states. Every process calls it (the shards and the gathered model files are collective);
    only rank 0 writes outside its own shard. Arguments as
    :func:`~vitzoo.training.state.save_run_checkpoint`."""
    for module in (objective, ema.module if ema is not None else None):
        if module is not None:
            reshard_all(module)
    contents = (
        ("objective",)
        + (("optimizer",) if optimizer.state else ())
        + (("ema",) if ema is not None else ())
    )
    progress = _progress(epoch, step, best_accuracy, epoch_step, partial, scaler, ema)
    run_metadata = {
        PROGRESS_KEY: json.dumps(progress),
        HISTORY_KEY: json.dumps(history),
        CONTENTS_KEY: json.dumps(contents),
        WORLD_KEY: str(info.world),
    }
    run_tensors = {k: v.detach().cpu().contiguous() for k, v in (rng or rng_state()).items()}
    state = live_state(objective, optimizer, ema, contents)
    name = write_state_folder(
        run_dir, state_name(epoch, epoch_step), state, run_tensors, run_metadata, info
    )
    model_meta = {
        CLASSES_KEY: json.dumps(classes),
        EPOCH_KEY: str(epoch),
        STEP_KEY: str(step),
        STATE_KEY: name,
    }
    write_model_files(
        run_dir, model, ema, model_meta, info, is_best=is_best, mid_epoch=epoch_step > 0
    )
    if info.is_main:
        drop_older_states(run_dir, keep=name)
    distributed.barrier(info)
    return run_dir / LAST


def _progress(
    epoch: int,
    step: int,
    best_accuracy: float | None,
    epoch_step: int,
    partial: dict[str, Any] | None,
    scaler: dict[str, Any] | None,
    ema: ModelEma | None,
) -> dict[str, Any]:
    """Where the run is (epoch, step, the mid-epoch partial), as the state's metadata keeps it."""
    progress: dict[str, Any] = {"epoch": epoch, "step": step, "best_accuracy": best_accuracy}
    if epoch_step:
        progress.update(epoch_step=epoch_step, partial=partial)
    if scaler is not None:
        progress["scaler"] = scaler
    if ema is not None:
        progress["ema_updates"] = ema.updates
    return progress


def write_model_files(
    run_dir: Path,
    model: nn.Module,
    ema: ModelEma | None,
    metadata: dict[str, str],
    info: DistInfo,
    *,
    is_best: bool,
    mid_epoch: bool,
) -> None:
    """``last`` (and at an epoch's end ``ema``; ``best`` when it is) as one file each, from
    the full state dicts gathered on rank 0."""
    weights = full_state_dict(model, info)
    if info.is_main:
        save(model, run_dir / LAST, metadata=metadata, tensors=weights)
    averaged = full_state_dict(ema.module, info) if ema is not None and not mid_epoch else None
    if averaged is not None and info.is_main:
        save(ema.module, run_dir / EMA, metadata=metadata, tensors=averaged)
    if is_best and info.is_main:
        source = model if ema is None else ema.module
        best = weights if ema is None else averaged
        save(source, run_dir / BEST, metadata=metadata, tensors=best)


def drop_older_states(run_dir: Path, keep: str) -> None:
    """Remove every state but ``keep``: sharded folders and single-file states alike (a run
    may have gone on with another strategy)."""
    for old in run_dir.glob("state-*"):
        if old.name == keep:
            continue
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Resuming
# --------------------------------------------------------------------------------------------
def read_resume_point(run_dir: Path) -> RunCheckpoint:
    """What ``--resume`` continues from, whichever way the run's state was written: a sharded
    state's progress (its tensors are loaded later, into the sharded modules), or the
    single-file state with its model weights (:func:`~vitzoo.training.state.read_run_checkpoint`)."""
    last = run_dir / LAST
    if not last.is_file():
        raise CheckpointError(f"{run_dir}: nothing to resume (no {LAST})")
    _, metadata = read_checkpoint(last, tensors=False)
    name = metadata.get(STATE_KEY)
    if name is None or not is_sharded_state(name):
        return read_run_checkpoint(run_dir)
    directory = run_dir / name
    if not (directory / RUN_FILE).is_file():
        raise CheckpointError(f"{run_dir}: {LAST} names {name}, which is missing or incomplete")
    tensors, meta = read_checkpoint(directory / RUN_FILE)
    progress = json.loads(meta[PROGRESS_KEY])
    if progress["epoch"] != int(metadata[EPOCH_KEY]) or progress["step"] != int(metadata[STEP_KEY]):
        raise CheckpointError(
            f"{run_dir}: {LAST} ends epoch {metadata[EPOCH_KEY]} but {name} ends epoch "
            f"{progress['epoch']}"
        )
    state = ShardedTrainingState(
        epoch=progress["epoch"],
        step=progress["step"],
        optimizer={},
        objective_extra={},
        rng={k: v for k, v in tensors.items() if k.startswith("rng.")},
        history=json.loads(meta.get(HISTORY_KEY, "[]")),
        best_accuracy=progress.get("best_accuracy"),
        epoch_step=int(progress.get("epoch_step", 0)),
        partial=progress.get("partial"),
        scaler=progress.get("scaler"),
        ema_updates=int(progress.get("ema_updates", 0)),
        directory=directory,
        contents=tuple(json.loads(meta[CONTENTS_KEY])),
    )
    return RunCheckpoint({}, metadata, state)


def load_sharded_state(
    state: ShardedTrainingState,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: ModelEma | None,
    info: DistInfo,
) -> None:
    """Load the folder's tensors into this run's modules, however they are sharded now (or
    not at all: one process reads every piece). Every process calls it."""
    if ema is None and "ema" in state.contents:
        raise CheckpointError(
            f"{state.directory}: the run kept a weight EMA; resume with its train.ema_decay"
        )
    live = live_state(objective, optimizer, ema, state.contents)
    if "optimizer" in state.contents:
        groups = get_optimizer_state_dict(objective, optimizer)["param_groups"]
    try:
        with _single_process_is_meant():
            dcp.load(
                live,
                storage_reader=MetadataCheckingReader(state.directory),
                no_dist=not info.enabled,
            )
    except (RuntimeError, ValueError, KeyError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{state.directory}: cannot load the run state ({reason})") from None
    set_model_state_dict(objective, live["objective"])
    if "optimizer" in state.contents:
        optim = {"state": live["optimizer"]["state"], "param_groups": groups}
        set_optimizer_state_dict(objective, optimizer, optim)
    if ema is not None and "ema" in live:
        set_model_state_dict(ema.module, live["ema"])
        ema.updates = state.ema_updates


class _DcpMetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` index and nothing else: DCP's own dataclasses, tensor
    sizes, dtypes and layouts, paths. Any other class is refused."""

    MODULES = {"torch.distributed.checkpoint.metadata"}
    NAMES = {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch.serialization", "_get_layout"),
        ("torch", "Size"),
        ("collections", "OrderedDict"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PureWindowsPath"),
    }

    def find_class(self, module: str, name: str) -> Any:
        allowed = module in self.MODULES or (module, name) in self.NAMES
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            allowed = True
        if not allowed:
            raise CheckpointError(
                f"DCP metadata refers to {module}.{name}, which a run state never holds; "
                "refusing to unpickle it"
            )
        return super().find_class(module, name)


class MetadataCheckingReader(dcp.FileSystemReader):
    """DCP's file reader, except that the ``.metadata`` pickle is read with
    :class:`_DcpMetadataUnpickler` (the tensors themselves DCP reads with
    ``torch.load(weights_only=True)``). Mirrors ``FileSystemReader.read_metadata`` of the
    pinned torch (2.13) but for the unpickler."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            metadata = _DcpMetadataUnpickler(stream).load()
        if not isinstance(metadata, Metadata):
            raise CheckpointError(f"{self.path}: not a DCP checkpoint index")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata
