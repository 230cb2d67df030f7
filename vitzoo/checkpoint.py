"""Checkpoints: safetensors weights with the spec in the metadata, so a file rebuilds itself.

Loading never unpickles anything. Writes go to a temporary file that is renamed into place, so
an interrupted save leaves the previous checkpoint intact. :func:`read_safetensors` is the one
reader of safetensors files (weight sources read theirs through it too).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from vitzoo import __version__
from vitzoo.builder import build_from_spec, current_spec
from vitzoo.errors import CheckpointError
from vitzoo.formats import FORMAT_KEY, SPEC_KEY, VERSION_KEY
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.spec import SpecError, spec_to_dict, validate_spec

FORMAT_VERSION = "1"


def atomic_save_tensors(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str]
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(dict(tensors), tmp, metadata=dict(metadata))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _preprocessing_metadata(model: nn.Module) -> dict[str, str]:
    """Pretrained models (``vitzoo.build(..., weights=...)``) keep their preprocessing on save."""
    pre = getattr(model, "vitzoo_preprocessing", None)
    return pre.to_metadata() if pre is not None else {}


def save(
    model: nn.Module,
    path: str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
    tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model``'s weights and spec to ``path`` (safetensors), atomically.

    ``tensors`` replaces ``model.state_dict()`` -- the full weights of a model whose own
    parameters are shards (a sharded training run gathers them first).
    """
    spec = current_spec(model)
    state = model.state_dict() if tensors is None else tensors
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
    meta = {
        FORMAT_KEY: FORMAT_VERSION,
        VERSION_KEY: __version__,
        SPEC_KEY: json.dumps(spec_to_dict(spec)),
        **_preprocessing_metadata(model),
        **(metadata or {}),
    }
    atomic_save_tensors(tensors, path, meta)
    return Path(path)


def read_safetensors(
    path: str | Path, *, error: type[Exception] = CheckpointError, tensors: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file (``tensors=False``: the metadata alone, read
    without loading any tensor); an unreadable file raises ``error`` with one plain line
    (weight sources pass :class:`~vitzoo.errors.WeightsError`)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            loaded = {key: handle.get_tensor(key) for key in handle.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())
        raise error(
            f"{path}: not a readable safetensors file ({reason}); truncated or not weights?"
        ) from None
    return loaded, metadata


def read_checkpoint(
    path: str | Path, *, tensors: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint file, with clear errors for bad files
    (``tensors=False``: the metadata only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return read_safetensors(path, tensors=tensors)


def load(
    path: str | Path, *, system: PluginSystem | None = None, map_location: Any = "cpu"
) -> nn.Module:
    """Rebuild the model stored in ``path`` from its spec and load its weights (strictly)."""
    system = system or get_plugin_system()
    tensors, metadata = read_checkpoint(path)
    raw = metadata.get(SPEC_KEY)
    if raw is None:
        raise CheckpointError(
            f"{path}: has no '{SPEC_KEY}' metadata; was it written by vitzoo.save?"
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the stored spec is not valid JSON ({exc})") from None
    try:
        # validation only: the stored spec was resolved (rules, trial build) when it was made
        spec = validate_spec(
            system.registry,
            data,
            file=f"{path}[spec]",
            failed_plugins=[r.name for r in system.failed],
        )
    except SpecError as exc:
        raise CheckpointError(f"{path}: the stored spec is no longer valid here:\n{exc}") from None
    model = build_from_spec(spec, system=system)
    load_weights(model, tensors, source=str(path))
    return model.to(map_location)


def load_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Strict load with a readable report of missing, unexpected and mis-shaped tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    try:
        model.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{source}: weights do not fit the model: {str(exc).splitlines()[-1].strip()}"
        ) from None
