"""Preprocessing that travels with weights: how the source model expects its images.

A pretrained model is only right on images normalised the way it was trained. The settings are
read from the source (HF ``preprocessor_config.json`` + ``id2label``; timm ``pretrained_cfg``;
a vitzoo checkpoint's own metadata), stored in every converted checkpoint's metadata, and read
by :func:`vitzoo.data.resolve_data_config` (so by ``predict`` / ``evaluate`` / ``attention`` /
``train``) wherever the spec does not set them itself (:func:`data_overrides`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vitzoo.formats import CLASSES_KEY, PREPROCESSING_KEY

# ImageNet's channel statistics (the default wherever a spec or checkpoint says nothing else)
# are defined once, in the spec layer that uses them as the ``data:`` defaults.


#: PIL resample codes as HF stores them in preprocessor_config.json.
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Preprocessing:
    """What the source says about its inputs; ``None`` where it says nothing."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    #: Centre-crop fraction at evaluation (1.0: the whole image resized).
    crop_fraction: float | None = None
    #: (C, H, W) the source model was trained at.
    input_size: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None

    def to_metadata(self) -> dict[str, str]:
        meta: dict[str, str] = {}
        settings = {k: v for k, v in asdict(self).items() if k != "class_names" and v is not None}
        if settings:
            meta[PREPROCESSING_KEY] = json.dumps(settings)
        if self.class_names is not None:
            meta[CLASSES_KEY] = json.dumps(list(self.class_names))
        return meta

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Preprocessing:
        settings: dict[str, Any] = {}
        raw = metadata.get(PREPROCESSING_KEY)
        if raw:
            try:
                settings = json.loads(raw)
            except json.JSONDecodeError:
                settings = {}
        names = metadata.get(CLASSES_KEY)
        classes = None
        if names:
            try:
                classes = tuple(json.loads(names))
            except json.JSONDecodeError:
                classes = None
        return cls(**_tupled(settings), class_names=classes)

    def merged(self, other: Preprocessing) -> Preprocessing:
        """``self``'s values, with ``other``'s where ``self`` has none."""
        mine, theirs = asdict(self), asdict(other)
        return Preprocessing(
            **_tupled({k: mine[k] if mine[k] is not None else theirs[k] for k in mine})
        )


def _tupled(settings: Mapping[str, Any]) -> dict[str, Any]:
    known = {"mean", "std", "interpolation", "crop_fraction", "input_size", "class_names"}
    out = {k: v for k, v in settings.items() if k in known}
    for key in ("mean", "std", "input_size", "class_names"):
        if out.get(key) is not None:
            out[key] = tuple(out[key])
    return out


def _hf_size(preprocessor: Mapping[str, Any]) -> tuple[int, int] | None:
    size = preprocessor.get("crop_size") if preprocessor.get("do_center_crop") else None
    size = size or preprocessor.get("size")
    if isinstance(size, int):
        return size, size
    if isinstance(size, Mapping):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    return None


def from_hf(config: Mapping[str, Any], preprocessor: Mapping[str, Any]) -> Preprocessing:
    """HF ``preprocessor_config.json`` (+ ``config.json`` labels and channels)."""
    from vitzoo.weights.hf_config import hf_class_names

    crop = preprocessor.get("crop_pct")
    if crop is None and preprocessor.get("do_center_crop"):
        resize, final = preprocessor.get("size"), preprocessor.get("crop_size")
        edge = resize.get("shortest_edge") if isinstance(resize, Mapping) else resize
        side = final.get("height") if isinstance(final, Mapping) else final
        if edge and side:
            crop = float(side) / float(edge)
    elif crop is None and preprocessor:
        crop = 1.0  # resize the whole image to the model's size (HF ViT / DeiT processors)
    hw = _hf_size(preprocessor)
    channels = int(config.get("num_channels", 3))
    resample = preprocessor.get("resample")
    return Preprocessing(
        mean=tuple(preprocessor["image_mean"]) if "image_mean" in preprocessor else None,
        std=tuple(preprocessor["image_std"]) if "image_std" in preprocessor else None,
        interpolation=PIL_RESAMPLE.get(resample) if isinstance(resample, int) else None,
        crop_fraction=float(crop) if crop is not None else None,
        input_size=(channels, *hw) if hw else None,
        class_names=tuple(hf_class_names(config) or ()) or None,
    )


def from_timm(
    pretrained_cfg: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> Preprocessing:
    """timm's ``pretrained_cfg`` (in a hub folder's config.json, or given by the user)."""
    config = config or {}
    names = config.get("label_names") or pretrained_cfg.get("label_names")
    size = pretrained_cfg.get("input_size")
    return Preprocessing(
        mean=tuple(pretrained_cfg["mean"]) if "mean" in pretrained_cfg else None,
        std=tuple(pretrained_cfg["std"]) if "std" in pretrained_cfg else None,
        interpolation=pretrained_cfg.get("interpolation"),
        crop_fraction=float(pretrained_cfg["crop_pct"]) if "crop_pct" in pretrained_cfg else None,
        input_size=tuple(size) if size else None,
        class_names=tuple(names) if names else None,
    )


def data_overrides(pre: Preprocessing, data_section: Any) -> dict[str, Any]:
    """``data.*`` values to take from ``pre``: those the spec leaves at their defaults.

    Defaults rather than "fields set" decide, because a spec that went through a checkpoint or
    an override round trip has every field set.
    """
    from vitzoo.spec.sections import DataConfig

    default = DataConfig()
    out: dict[str, Any] = {}
    if (
        pre.mean is not None
        and pre.std is not None
        and tuple(data_section.mean) == default.mean
        and tuple(data_section.std) == default.std
        and (tuple(pre.mean), tuple(pre.std)) != (default.mean, default.std)
    ):
        out["mean"], out["std"] = tuple(pre.mean), tuple(pre.std)
    if (
        pre.crop_fraction is not None
        and data_section.eval_crop == default.eval_crop
        and pre.crop_fraction != default.eval_crop
    ):
        out["eval_crop"] = min(1.0, float(pre.crop_fraction))
    return out
