"""What input a model wants: :func:`resolve_data_config`, the one answer every command uses.

A model is only right on images prepared the way it was trained. That knowledge is spread over
up to four places -- the spec's ``data:`` section, the preprocessing that converted pretrained
weights carry (``model.vitzoo_preprocessing``), the same settings stored in a checkpoint's
metadata, and the model's own input size -- and ``train``, ``evaluate``, ``predict`` and
``attention`` must all read them the same way. They do, by calling this function.

Precedence, per setting (the first tier that has a value wins):

1. explicit ``**overrides`` (``mean=``, ``std=``, ``crop_pct=``, ``input_size=``,
   ``interpolation=``, ``class_names=``);
2. the spec's ``data:`` section where it departs from vitzoo's defaults (mean/std, which go
   together, and ``eval_crop``): a value somebody set, and the one training used;
3. the model's ``vitzoo_preprocessing`` (what pretrained weights said about their inputs);
4. the checkpoint's metadata (:meth:`~vitzoo.weights.preprocessing.Preprocessing.from_metadata`);
5. vitzoo's defaults: ImageNet's mean/std, the whole image (``crop_pct=1.0``), bicubic.

Tiers 3 and 4 only fill what the spec leaves at its defaults (the rule of
:func:`vitzoo.weights.preprocessing.data_overrides`, which fine-tuning applies to the spec too):
a spec that sets ``data.mean`` was trained with it, and a checkpoint saved from a fine-tuned
model still carries the pretrained source's statistics. The input size is the model's own
``input_size`` when there is a model (after overrides), else the weights', else the spec's
``image_size`` / ``in_chans`` / ``frames``, else ``(3, 224, 224)``; with ``data.max_patches`` and a
model that takes images of different sizes, each image keeps its aspect ratio under that patch
budget instead (``native``, :mod:`vitzoo.data.native`). Class names come from the
overrides, the model's preprocessing, then the checkpoint. The interpolation is bicubic unless
overridden: training resamples bicubic and the spec has no field for it, so a weights source's
own interpolation is not used (evaluation must match training).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vitzoo.checkpoint import read_checkpoint
from vitzoo.data.native import NativeSizing
from vitzoo.data.transforms import RESAMPLING, ModelInput
from vitzoo.errors import CheckpointError
from vitzoo.formats import SPEC_KEY
from vitzoo.spec import SpecBase, is_spec_file_name
from vitzoo.spec.sections import DataConfig
from vitzoo.weights.preprocessing import Preprocessing, data_overrides

#: Where a resolved value came from (``ResolvedDataConfig.sources``), highest precedence first.
TIERS = ("override", "spec", "model", "checkpoint", "default")
OVERRIDABLE = ("input_size", "mean", "std", "crop_pct", "interpolation", "class_names")
DEFAULT_INPUT_SIZE = (3, 224, 224)


@dataclass(frozen=True)
class ResolvedDataConfig:
    """How to turn an image into a model's input (timm's ``data_config``, as an object).

    ``data`` is the spec's ``data:`` section with the resolved mean/std/``eval_crop`` in place
    (the training augmentation reads the rest of it); ``sources`` names the tier each setting
    came from (one of :data:`TIERS`). :meth:`to_dict` gives timm's dictionary.
    """

    input_size: tuple[int, ...]
    interpolation: str
    data: DataConfig
    class_names: tuple[str, ...] | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    #: Native resolution (``data.max_patches`` with a model that takes images of different
    #: sizes): how each image is sized instead of ``size``; None: every image to ``size``.
    native: NativeSizing | None = None

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.data.mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.data.std)

    @property
    def crop_pct(self) -> float:
        """The centred fraction of each side kept at evaluation (``data.eval_crop``)."""
        return float(self.data.eval_crop)

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def frames(self) -> int | None:
        """Frames per clip for a video model ``(C, T, H, W)``; ``None`` for an image model."""
        return self.input_size[1] if len(self.input_size) == 4 else None

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of each frame the model reads."""
        return self.input_size[-2], self.input_size[-1]

    def to_dict(self) -> dict[str, Any]:
        """timm's keys: ``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``."""
        return {
            "input_size": self.input_size,
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            "crop_pct": self.crop_pct,
        }


@dataclass(frozen=True)
class _Sources:
    """What each tier says, gathered from whatever the caller passed."""

    model: Any = None
    spec_data: DataConfig | None = None
    spec_model: Mapping[str, Any] | None = None
    model_pre: Preprocessing = field(default_factory=Preprocessing)
    checkpoint_pre: Preprocessing = field(default_factory=Preprocessing)


def resolve_data_config(
    source: Any = None,
    /,
    *,
    checkpoint: str | Path | Mapping[str, str] | None = None,
    **overrides: Any,
) -> ResolvedDataConfig:
    """The input a model wants: size, mean/std, crop, interpolation, class names.

    ``source`` is a built model (its ``vitzoo_spec``, ``vitzoo_preprocessing`` and
    ``input_size`` are read), a checkpoint file (its metadata: stored spec and preprocessing),
    a spec (:class:`~vitzoo.spec.SpecBase`, a spec file or a preset name), or ``None`` (only
    overrides and defaults). ``checkpoint`` adds the metadata of the file a model was loaded
    from (a path, or the metadata mapping itself). The precedence is the module's docstring.
    """
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise TypeError(
            f"resolve_data_config() got unknown setting(s) {unknown}; allowed: {list(OVERRIDABLE)}"
        )
    tiers = _gather(source, checkpoint)
    data, sources = _statistics(tiers, overrides)
    input_size, sources["input_size"] = _input_size(tiers, overrides.get("input_size"))
    interpolation = str(overrides.get("interpolation", "bicubic"))
    if interpolation not in RESAMPLING:
        raise ValueError(f"interpolation={interpolation!r}; allowed: {list(RESAMPLING)}")
    sources["interpolation"] = "override" if "interpolation" in overrides else "default"
    names, sources["class_names"] = _first(
        ("override", overrides.get("class_names")),
        ("model", tiers.model_pre.class_names),
        ("checkpoint", tiers.checkpoint_pre.class_names),
    )
    return ResolvedDataConfig(
        input_size=input_size,
        interpolation=interpolation,
        data=data,
        class_names=tuple(names) if names is not None else None,
        sources=sources,
        native=_native(tiers, data),
    )


def _native(tiers: _Sources, data: DataConfig) -> NativeSizing | None:
    """``data.max_patches`` with the model's patch size and largest grid (a model is needed: it
    alone says how it patchifies; resolving from a spec or checkpoint alone leaves it out)."""
    if data.max_patches is None or tiers.model is None:
        return None
    return NativeSizing.of(tiers.model, data.max_patches)


def _gather(source: Any, checkpoint: str | Path | Mapping[str, str] | None) -> _Sources:
    """Sort what the caller passed into the tiers it speaks for."""
    metadata: Mapping[str, str] | None = None
    spec: Any = None
    model = None
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_file() and not is_spec_file_name(path):
            metadata = checkpoint_metadata(path)
        else:
            from vitzoo.builder import resolve_spec

            spec = resolve_spec(source)
    elif isinstance(source, SpecBase):
        spec = source
    elif source is not None:
        model = source
        spec = getattr(source, "vitzoo_spec", None)
    if checkpoint is not None:
        metadata = (
            checkpoint if isinstance(checkpoint, Mapping) else checkpoint_metadata(checkpoint)
        )
    spec_data, spec_model = _spec_sections(spec)
    if spec is None and metadata is not None:
        spec_data, spec_model = _stored_spec_sections(metadata)
    model_pre = getattr(model, "vitzoo_preprocessing", None) or Preprocessing()
    checkpoint_pre = Preprocessing.from_metadata(metadata) if metadata else Preprocessing()
    return _Sources(model, spec_data, spec_model, model_pre, checkpoint_pre)


def checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors checkpoint, without reading its tensors."""
    return read_checkpoint(path, tensors=False)[1]


def _spec_sections(spec: Any) -> tuple[DataConfig | None, Mapping[str, Any] | None]:
    if spec is None:
        return None, None
    model = getattr(spec, "model", None)
    fields = model.model_dump() if hasattr(model, "model_dump") else None
    return getattr(spec, "data", None), fields


def _stored_spec_sections(
    metadata: Mapping[str, str],
) -> tuple[DataConfig | None, Mapping[str, Any] | None]:
    """The ``data:`` and ``model:`` sections of the spec stored in a checkpoint (no plugins
    needed: the data section is validated alone, the model's fields are only read)."""
    raw = metadata.get(SPEC_KEY)
    if not raw:
        return None, None
    try:
        stored = json.loads(raw)
        data = stored.get("data")
        return (DataConfig.model_validate(data) if data else None), stored.get("model")
    except ValidationError as exc:
        raise CheckpointError(f"the checkpoint's stored data section: {_plain(exc)}") from None
    except (json.JSONDecodeError, AttributeError) as exc:
        raise CheckpointError(f"the checkpoint's stored spec is not readable ({exc})") from None


def _statistics(tiers: _Sources, overrides: Mapping[str, Any]) -> tuple[DataConfig, dict[str, str]]:
    """The data section with mean/std/eval_crop resolved, and where each came from."""
    data = tiers.spec_data or DataConfig()
    default = DataConfig()
    sources = {
        "mean": "spec" if tuple(data.mean) != default.mean else "default",
        "std": "spec" if tuple(data.std) != default.std else "default",
        "crop_pct": "spec" if data.eval_crop != default.eval_crop else "default",
    }
    pre = tiers.model_pre.merged(tiers.checkpoint_pre)
    updates = data_overrides(pre, data)
    if "mean" in updates:
        tier = "model" if tiers.model_pre.mean is not None else "checkpoint"
        sources["mean"] = sources["std"] = tier
    if updates.get("eval_crop", data.eval_crop) != data.eval_crop:  # a crop > 1 clamps to 1
        tier = "model" if tiers.model_pre.crop_fraction is not None else "checkpoint"
        sources["crop_pct"] = tier
    for name, key in (("mean", "mean"), ("std", "std"), ("crop_pct", "eval_crop")):
        if name in overrides:
            value = overrides[name]
            updates[key] = tuple(value) if isinstance(value, Sequence) else value
            sources[name] = "override"
    try:
        data = DataConfig.model_validate({**data.model_dump(), **updates})
    except ValidationError as exc:
        raise ValueError(f"resolve_data_config: {_plain(exc)}") from None
    return data, sources


def _plain(exc: ValidationError) -> str:
    """``setting: message`` for each problem, without pydantic's error codes and links."""
    out = []
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")  # a section rule's SpecValueError
        path = getattr(cause, "path", None) or error["loc"]
        name = ".".join(str(p) for p in path) or "data"
        message = getattr(cause, "message", None) or error["msg"]
        out.append(f"{'crop_pct' if name == 'eval_crop' else name}: {message}")
    return "; ".join(out)


def _input_size(tiers: _Sources, override: Any) -> tuple[tuple[int, ...], str]:
    """``(C, H, W)`` or ``(C, T, H, W)`` and its tier (see the module docstring)."""
    own = tuple(getattr(tiers.model, "input_size", ()) or ())
    if own and ModelInput.from_size(own) is None:
        raise ValueError(f"expected an image (C, H, W) or video (C, T, H, W) model, got {own}")
    size, tier = _first(
        ("model", own or None),
        ("model", tiers.model_pre.input_size),
        ("checkpoint", tiers.checkpoint_pre.input_size),
        ("spec", _spec_input_size(tiers.spec_model)),
        ("default", DEFAULT_INPUT_SIZE),
    )
    size = tuple(int(s) for s in size)
    if override is None:
        return size, tier
    return _overridden_size(size, override), "override"


def _overridden_size(base: tuple[int, ...], override: Any) -> tuple[int, ...]:
    """An int (square) or ``(H, W)`` keeps ``base``'s channels and frames; 3 or 4 numbers are
    the whole size."""
    value = (override, override) if isinstance(override, int) else tuple(override)
    if len(value) == 2:
        value = (*base[:-2], *value)
    if ModelInput.from_size(value) is None or min(int(v) for v in value) < 1:
        raise ValueError(
            f"input_size={override!r}; expected a side, (H, W), (C, H, W) or (C, T, H, W) "
            "of positive integers"
        )
    return tuple(int(v) for v in value)


def _spec_input_size(model: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    """From a spec's model fields: ``in_chans``, ``image_size`` and, for video, ``frames``."""
    if not model or model.get("image_size") is None:
        return None
    side = model["image_size"]
    height, width = (side, side) if isinstance(side, int) else tuple(side)[-2:]
    channels = int(model.get("in_chans") or 3)
    frames = model.get("frames")
    return (channels, int(frames), height, width) if frames else (channels, height, width)


def _first(*candidates: tuple[str, Any]) -> tuple[Any, str]:
    """The first ``(tier, value)`` whose value is not ``None``, as ``(value, tier)``."""
    for tier, value in candidates:
        if value is not None:
            return value, tier
    return None, "default"
