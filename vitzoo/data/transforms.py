"""Image (or clip) -> the model's input tensor: crop boxes, resizing, normalisation, augmentation.

Pillow + torch only (torchvision's wheel does not load beside the CPU torch build). Training
and every inference command build their transform here, through :func:`create_transform`, from
one :class:`~vitzoo.data.config.ResolvedDataConfig`; so a checkpoint is evaluated exactly as it
was validated during training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from vitzoo.data.augment import augment_after_normalise, augment_before_normalise, random_box
from vitzoo.data.images import convert_image, image_mode
from vitzoo.data.native import NativeSizing
from vitzoo.spec.sections import DataConfig

if TYPE_CHECKING:
    from vitzoo.data.config import ResolvedDataConfig

#: Interpolation names (timm's / Pillow's words) -> Pillow resampling filters.
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator,
) -> tuple[int, int, int, int]:
    """A random box covering ``scale`` of the area with aspect ``ratio`` (Inception-style),
    as Pillow's ``(left, top, right, bottom)``."""
    box = random_box((width, height), scale, ratio, gen)
    if box is not None:
        left, top, w, h = box
        return left, top, left + w, top + h
    # Fall back to the largest centred box the ratio range allows.
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_crop_box(width: int, height: int, fraction: float) -> tuple[int, int, int, int]:
    """The centred box of ``fraction`` of each side (vitzoo's ``crop_pct``), as Pillow's box."""
    w, h = max(1, round(width * fraction)), max(1, round(height * fraction))
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class ModelInput(NamedTuple):
    """What the data must deliver to a model: ``frames`` per clip is ``None`` for an image model."""

    channels: int
    height: int
    width: int
    frames: int | None

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelInput | None:
        """From ``model.input_size``: ``(C, H, W)`` or ``(C, T, H, W)``; ``None`` for neither."""
        return cls.from_size(tuple(getattr(model, "input_size", ())))

    @classmethod
    def from_size(cls, size: Sequence[int]) -> ModelInput | None:
        """From an input size ``(C, H, W)`` or ``(C, T, H, W)``; ``None`` for neither."""
        size = tuple(int(s) for s in size)
        if len(size) == 4:
            channels, frames, height, width = size
            return cls(channels, height, width, frames)
        if len(size) == 3:
            channels, height, width = size
            return cls(channels, height, width, None)
        return None


@dataclass(frozen=True)
class Transform:
    """Image -> normalised (C, H, W) tensor, or a clip (list of frames) -> (C, T, H, W).

    Evaluation: the centred ``config.eval_crop`` box, resized to ``size``, normalised by
    ``config.mean`` / ``config.std``. Training: random resized crop + flip (one box for every
    frame of a clip), then the configured tensor augmentations (:mod:`vitzoo.data.augment`),
    all drawn from ``gen``. Frames in another mode (RGBA, palette, 16-bit) are converted as
    :func:`vitzoo.data.images.convert_image` does. Build one with :func:`create_transform`.
    """

    size: tuple[int, int]
    channels: int
    config: DataConfig
    train: bool
    interpolation: str = "bicubic"
    #: Native resolution: each image resized, aspect kept, under a patch budget (not to ``size``).
    native: NativeSizing | None = None

    def __call__(
        self, img: Image.Image | Sequence[Image.Image], gen: torch.Generator | None = None
    ) -> torch.Tensor:
        frames = [img] if isinstance(img, Image.Image) else list(img)
        width, height = frames[0].size
        if self.train:
            if gen is None:
                raise ValueError("training transforms need a seeded generator")
            box = random_resized_crop_box(width, height, self.config.scale, self.config.ratio, gen)
        else:
            box = centre_crop_box(width, height, self.config.eval_crop)
        flip = self.train and float(torch.rand((), generator=gen)) < self.config.hflip
        size = self.size
        if self.native is not None:  # the crop's own aspect ratio, under the patch budget
            size = self.native.size_for(box[3] - box[1], box[2] - box[0])
        tensor = torch.stack(
            [self._frame(frame, (width, height), box, flip, size) for frame in frames]
        )
        if self.train:  # (T, C, H, W) from here
            tensor = augment_before_normalise(tensor, self.config, gen)
        mean = _per_channel(self.config.mean, self.channels)
        std = _per_channel(self.config.std, self.channels)
        tensor = (tensor - mean) / std
        if self.train:
            tensor = augment_after_normalise(tensor, self.config, gen)
        if isinstance(img, Image.Image):
            return tensor[0]
        return tensor.permute(1, 0, 2, 3).contiguous()  # (C, T, H, W)

    def _frame(
        self,
        frame: Image.Image,
        extent: tuple[int, int],
        box: tuple[int, int, int, int],
        flip: bool,
        size: tuple[int, int],
    ) -> torch.Tensor:
        """One frame cropped to ``box``, resized to ``size`` (H, W), scaled to [0, 1], (C, H, W)."""
        resample = RESAMPLING[self.interpolation]
        if frame.mode != image_mode(self.channels):
            frame = convert_image(frame, self.channels)
        if frame.size != extent:
            frame = frame.resize(extent, resample)
        frame = frame.resize((size[1], size[0]), resample, box=box)
        if flip:
            frame = ImageOps.mirror(frame)
        array = np.asarray(frame, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.reshape(size[0], size[1], -1).copy())
        return tensor.permute(2, 0, 1)


def _per_channel(values: tuple[float, ...], channels: int) -> torch.Tensor:
    if len(values) == channels:
        out = list(values)
    elif len(values) == 1:
        out = list(values) * channels
    else:  # three statistics for a one-channel model: use their average
        out = [sum(values) / len(values)] * channels
    return torch.tensor(out, dtype=torch.float32).view(channels, 1, 1)


def create_transform(config: ResolvedDataConfig, train: bool = False) -> Transform:
    """The callable that turns a PIL image (or a clip: a list of frames) into the input tensor
    of the model ``config`` was resolved for (:func:`vitzoo.data.resolve_data_config`).

    ``train=False``: centre crop of ``config.crop_pct`` of each side, resized (``interpolation``)
    to the model's size (``config.native``: to the crop's own aspect ratio under the patch
    budget), normalised with ``mean``/``std`` -- deterministic. ``train=True``: the
    augmentation of the spec's ``data:`` section (``config.data``: random resized crop, flip,
    auto-augment, colour jitter, random erasing); call it with a seeded ``torch.Generator``.
    """
    height, width = config.size
    return Transform(
        (height, width),
        config.channels,
        config.data,
        train,
        interpolation=config.interpolation,
        native=config.native,
    )
