"""Reading weights sources: what a path or ``hf-hub:`` name holds, detected, never unpickled.

Formats (``format=`` overrides detection):

* ``vitzoo`` -- a safetensors file whose metadata holds ``vitzoo.spec`` (it rebuilds itself);
* ``timm`` / ``official`` -- a plain state dict: safetensors, or ``.pth/.bin/.pt`` read only with
  ``torch.load(weights_only=True)`` (containers such as ``{"model": state_dict}`` are unwrapped);
  a timm hub folder (``config.json`` with ``architecture``) too;
* ``hf`` -- a Hugging Face transformers folder: ``config.json`` (``model_type``) plus
  ``model.safetensors`` or ``pytorch_model.bin``, with ``preprocessor_config.json`` if present;
* ``hf-hub:ORG/NAME`` -- resolved to such a folder by :mod:`vitzoo.weights.hub`.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitzoo.checkpoint import read_safetensors
from vitzoo.errors import WeightsError
from vitzoo.formats import HUB_PREFIX, SPEC_KEY, WEIGHT_FORMATS
from vitzoo.spec.yaml_source import is_spec_file_name

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
#: Keys under which training scripts nest the state dict (official DeiT/CaiT: "model").
CONTAINER_KEYS = ("state_dict", "model", "module", "model_state_dict")


@dataclass
class WeightsSource:
    """One readable source: its tensors plus whatever describes them."""

    location: str
    format: str
    tensors: dict[str, torch.Tensor]
    #: safetensors metadata (vitzoo: the spec, preprocessing, classes).
    metadata: dict[str, str] = field(default_factory=dict)
    #: config.json of a Hugging Face / timm hub folder.
    config: dict[str, Any] = field(default_factory=dict)
    #: preprocessor_config.json of a Hugging Face folder.
    preprocessor: dict[str, Any] = field(default_factory=dict)

    @property
    def stored_spec(self) -> dict[str, Any] | None:
        raw = self.metadata.get(SPEC_KEY)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise WeightsError(
                f"{self.location}: the stored spec is not valid JSON ({exc})"
            ) from None


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if (
            isinstance(obj, Mapping)
            and obj
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            return {str(k): v for k, v in obj.items()}
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
                continue
            tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
        break
    raise WeightsError(f"{path}: holds no state dict of tensors (found {type(obj).__name__})")


def read_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = " ".join(str(exc).split("\n")[0].split())
        unsafe = "Unsupported global" in str(exc) or "GLOBAL" in str(exc)
        why = "it contains objects other than tensors" if unsafe else "it is not a torch file"
        raise WeightsError(
            f"{path}: refused to load: {why} and vitzoo only reads pickles with "
            f"torch.load(weights_only=True) ({first[:160]}); re-save its state_dict as safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise WeightsError(f"{path}: not a readable torch checkpoint ({reason})") from None
    return _unwrap(obj, path)


def read_weights_file(
    path: Path, tensors: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a weights file (``tensors=False``: a safetensors file's metadata
    alone; a pickle can only be read whole)."""
    if path.suffix == ".safetensors":
        return read_safetensors(path, error=WeightsError, tensors=tensors)
    if path.suffix in PICKLE_SUFFIXES:
        return read_pickle_state_dict(path), {}
    with path.open("rb") as handle:  # unknown suffix: sniff (safetensors starts with a length)
        head = handle.read(16)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return read_pickle_state_dict(path), {}
    return read_safetensors(path, error=WeightsError, tensors=tensors)


def is_weights_source(source: str | Path) -> bool:
    """Whether ``source`` names weights rather than a spec or preset: ``hf-hub:NAME``, a model
    folder with ``config.json``, or an existing file not named like a spec file (``.yaml``,
    ``.yml``, ``.json``). Paths only: nothing is read."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return True
    path = Path(text)
    if path.is_dir():
        return (path / "config.json").is_file()
    return path.is_file() and not is_spec_file_name(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object")
    return data


def read_folder(folder: Path, format: str | None, tensors: bool = True) -> WeightsSource:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise WeightsError(
            f"{folder}: a weights folder needs config.json (a Hugging Face or timm model folder)"
        )
    config = _read_json(config_path)
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise WeightsError(f"{folder}: no weights file ({' or '.join(WEIGHT_FILES)})")
    weights_tensors, metadata = read_weights_file(weights, tensors)
    detected = "hf" if "model_type" in config else "timm" if "architecture" in config else None
    if format is None and detected is None:
        raise WeightsError(
            f"{config_path}: neither a transformers config (model_type) nor a timm one "
            f"(architecture); pass --format"
        )
    preprocessor_path = folder / "preprocessor_config.json"
    preprocessor = _read_json(preprocessor_path) if preprocessor_path.is_file() else {}
    return WeightsSource(
        location=str(folder),
        format=format or detected or "hf",
        tensors=weights_tensors,
        metadata=metadata,
        config=config,
        preprocessor=preprocessor,
    )


def read_source(
    source: str | Path, format: str | None = None, *, tensors: bool = True
) -> WeightsSource:
    """Read ``source`` (file, folder or ``hf-hub:NAME``); detect its format unless given.
    ``tensors=False`` reads what describes the weights (metadata, config.json) and, where the
    file format allows, no tensor."""
    if format is not None and format not in WEIGHT_FORMATS:
        raise WeightsError(
            f"unknown weights format {format!r}; allowed: {', '.join(WEIGHT_FORMATS)}"
        )
    text = str(source)
    if text.startswith(HUB_PREFIX):
        from vitzoo.weights.hub import resolve_hub

        source = resolve_hub(text[len(HUB_PREFIX) :])
    path = Path(source)
    if path.is_dir():
        return read_folder(path, format, tensors)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file or folder")
    read_tensors, metadata = read_weights_file(path, tensors)
    detected = "vitzoo" if SPEC_KEY in metadata else "timm"
    chosen = format or detected
    if chosen == "vitzoo" and SPEC_KEY not in metadata:
        raise WeightsError(
            f"{path}: has no '{SPEC_KEY}' metadata, so it is not a vitzoo checkpoint"
        )
    if chosen == "hf":
        raise WeightsError(
            f"{path}: a Hugging Face source is a folder with config.json, not a file"
        )
    pretrained_cfg = metadata.get("pretrained_cfg")
    config: dict[str, Any] = {}
    if pretrained_cfg:
        try:
            config = {"pretrained_cfg": json.loads(pretrained_cfg)}
        except json.JSONDecodeError:
            config = {}
    return WeightsSource(str(path), chosen, read_tensors, metadata, config)
