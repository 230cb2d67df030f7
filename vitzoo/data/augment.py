"""Tensor augmentations for small data: TrivialAugment, RandAugment, colour jitter, erasing.

Written on plain torch (torchvision's wheel does not load beside the CPU torch build, and
kornia draws from the global RNG): every random choice comes from the ``torch.Generator`` the
data pipeline seeds with ``(seed, epoch, sample)``, so a resumed run and a run with workers see
the same augmented images as an uninterrupted one.

Images are float tensors in ``[0, 1]`` shaped ``(C, H, W)``; a clip is ``(T, C, H, W)`` and
every frame gets the same operation with the same strength (a clip must stay one clip).
Random erasing runs after normalisation (it fills with unit noise), the others before.

The operations and their ranges follow RandAugment (Cubuk et al. 2020, arXiv:1909.13719;
magnitude 0..30 as in timm/torchvision) and TrivialAugment (Muller & Hutter 2021,
arXiv:2103.10158: one op per image at a uniformly random strength).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vitzoo.spec.sections import DataConfig

#: Greyscale weights (ITU-R 601-2 luma, as Pillow's ``convert("L")``).
LUMA = (0.299, 0.587, 0.114)
MAX_MAGNITUDE = 30.0


def _rand(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * _rand(gen)


def _signed(value: float, gen: torch.Generator) -> float:
    return -value if _rand(gen) < 0.5 else value


def random_box(
    extent: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator,
    *,
    smaller: bool = False,
    tries: int = 10,
) -> tuple[int, int, int, int] | None:
    """A random box inside ``extent = (a, b)``: ``(start_a, start_b, size_a, size_b)``.

    Its area is a uniform fraction in ``scale`` of the extent's and its side ratio
    ``size_a / size_b`` log-uniform in ``ratio`` (Inception's random-resized-crop rule, which
    random erasing shares); a draw that does not fit is redrawn, up to ``tries`` times, then
    ``None``. ``smaller`` asks for a box strictly smaller than the extent on both sides.
    """
    a, b = extent
    area = a * b
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    margin = 1 if smaller else 0
    for _ in range(tries):
        target = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, log_lo, log_hi))
        size_a = round(math.sqrt(target * aspect))
        size_b = round(math.sqrt(target / aspect))
        if 0 < size_a <= a - margin and 0 < size_b <= b - margin:
            start_a = int(torch.randint(0, a - size_a + 1, (), generator=gen))
            start_b = int(torch.randint(0, b - size_b + 1, (), generator=gen))
            return start_a, start_b, size_a, size_b
    return None


def greyscale(img: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) -> (..., 1, H, W) luma; a one-channel image is returned as is."""
    if img.shape[-3] == 1:
        return img
    weights = img.new_tensor(LUMA).view(3, 1, 1)
    return (img * weights).sum(dim=-3, keepdim=True)


def blend(img: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    """``other + factor * (img - other)`` clamped to [0, 1] (Pillow's ImageEnhance rule)."""
    return (other + factor * (img - other)).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Operations: f(img, strength in [0, 1] already signed where it matters) -> img
# --------------------------------------------------------------------------------------------
def brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    return blend(img, torch.zeros_like(img), factor)


def contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    mean = greyscale(img).mean(dim=(-3, -2, -1), keepdim=True)
    return blend(img, mean.expand_as(img), factor)


def saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    if img.shape[-3] == 1:
        return img
    return blend(img, greyscale(img).expand_as(img), factor)


def sharpness(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with Pillow's SMOOTH-filtered image; border pixels stay as they are (as Pillow)."""
    h, w = img.shape[-2:]
    if h < 3 or w < 3:
        return img
    flat = img.reshape(-1, 1, h, w)
    kernel = img.new_tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    smooth = flat.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(flat, kernel.view(1, 1, 3, 3))
    return blend(img, smooth.reshape(img.shape), factor)


def posterize(img: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2 ** (8 - bits)
    return torch.floor((img * 255.0).round() / levels) * levels / 255.0


def solarize(img: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(img >= threshold, 1.0 - img, img)


def _per_channel_view(img: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) -> (C, N): each channel's values over all frames."""
    channels = img.shape[-3]
    return img.movedim(-3, 0).reshape(channels, -1)


def _from_channel_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    moved = like.movedim(-3, 0)
    return values.reshape(moved.shape).movedim(0, -3)


def autocontrast(img: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to span [0, 1] (a constant channel is left alone)."""
    view = _per_channel_view(img)
    low = view.min(dim=1, keepdim=True).values
    high = view.max(dim=1, keepdim=True).values
    span = high - low
    stretched = torch.where(span > 0, (view - low) / span.clamp_min(1e-12), view)
    return _from_channel_view(stretched, img)


def equalize(img: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel on 8-bit levels (the rule of Pillow's ``equalize``)."""
    view = (_per_channel_view(img) * 255.0).round().long().clamp(0, 255)
    out = torch.empty_like(view)
    for c in range(view.shape[0]):
        hist = torch.bincount(view[c], minlength=256)
        nonzero = hist[hist > 0]
        step = (int(hist.sum()) - int(nonzero[-1])) // 255
        if step == 0:
            out[c] = view[c]
            continue
        lut = (torch.cumsum(hist, 0) - hist + step // 2) // step
        out[c] = lut.clamp(0, 255)[view[c]]
    return _from_channel_view(out.to(img.dtype) / 255.0, img)


def affine(
    img: torch.Tensor,
    *,
    angle: float = 0.0,
    shear: tuple[float, float] = (0.0, 0.0),
    translate: tuple[float, float] = (0.0, 0.0),
) -> torch.Tensor:
    """Rotate (degrees), shear (tangent) and translate (fraction of the side) about the centre;
    uncovered pixels are black (0), as in torchvision's default fill."""
    h, w = img.shape[-2:]
    rad = math.radians(angle)
    cos, sin = math.cos(rad), math.sin(rad)
    # Output -> input map in pixel units about the centre, then into affine_grid's [-1, 1].
    sx, sy = shear
    matrix = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64) @ torch.tensor(
        [[1.0, sx], [sy, 1.0]], dtype=torch.float64
    )
    inverse = torch.linalg.inv(matrix)
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
    theta = torch.zeros(2, 3, dtype=torch.float64)
    theta[:, :2] = inverse * scale[None, :] / scale[:, None]
    shift = torch.tensor([translate[0] * w, translate[1] * h], dtype=torch.float64)
    theta[:, 2] = -(inverse @ shift) / scale
    flat = img.reshape(-1, *img.shape[-3:])
    grid = F.affine_grid(
        theta.to(img.dtype).expand(flat.shape[0], 2, 3), list(flat.shape), align_corners=False
    )
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(img.shape)


#: name -> (function of (img, level in [0, 1], generator), uses a signed level)
def _ops() -> dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]]:
    def enhance(fn: Callable[[torch.Tensor, float], torch.Tensor]):
        return lambda img, level, gen: fn(img, 1.0 + _signed(0.9 * level, gen))

    return {
        "identity": lambda img, level, gen: img,
        "autocontrast": lambda img, level, gen: autocontrast(img),
        "equalize": lambda img, level, gen: equalize(img),
        "rotate": lambda img, level, gen: affine(img, angle=_signed(30.0 * level, gen)),
        "shear_x": lambda img, level, gen: affine(img, shear=(_signed(0.3 * level, gen), 0.0)),
        "shear_y": lambda img, level, gen: affine(img, shear=(0.0, _signed(0.3 * level, gen))),
        "translate_x": lambda img, level, gen: affine(
            img, translate=(_signed(0.45 * level, gen), 0.0)
        ),
        "translate_y": lambda img, level, gen: affine(
            img, translate=(0.0, _signed(0.45 * level, gen))
        ),
        "brightness": enhance(brightness),
        "color": enhance(saturation),
        "contrast": enhance(contrast),
        "sharpness": enhance(sharpness),
        "posterize": lambda img, level, gen: posterize(img, 8 - round(4 * level)),
        "solarize": lambda img, level, gen: solarize(img, 1.0 - level),
    }


OPS = _ops()
OP_NAMES = tuple(OPS)


def apply_op(img: torch.Tensor, name: str, level: float, gen: torch.Generator) -> torch.Tensor:
    """Apply operation ``name`` at ``level`` in [0, 1] (1 = magnitude 30)."""
    return OPS[name](img, level, gen)


def _pick(gen: torch.Generator) -> str:
    return OP_NAMES[int(torch.randint(len(OP_NAMES), (), generator=gen))]


def trivial_augment(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One uniformly chosen op at a uniformly random strength."""
    name = _pick(gen)
    return apply_op(img, name, _rand(gen), gen)


def rand_augment(
    img: torch.Tensor, gen: torch.Generator, ops: int, magnitude: float
) -> torch.Tensor:
    """``ops`` uniformly chosen ops (with replacement), each at ``magnitude`` / 30."""
    level = magnitude / MAX_MAGNITUDE
    for _ in range(ops):
        img = apply_op(img, _pick(gen), level, gen)
    return img


def color_jitter(img: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation, each by a factor in [1 - s, 1 + s], random order."""
    factors = [1.0 + strength * (2.0 * _rand(gen) - 1.0) for _ in range(3)]
    order = torch.randperm(3, generator=gen).tolist()
    fns = (brightness, contrast, saturation)
    for i in order:
        img = fns[i](img, factors[i])
    return img


def random_erasing(
    img: torch.Tensor,
    probability: float,
    scale: tuple[float, float],
    gen: torch.Generator,
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Replace a random rectangle with unit Gaussian noise (Zhong et al. 2020, timm's 'pixel'
    mode), on the normalised image; the same rectangle in every frame of a clip."""
    if probability <= 0 or _rand(gen) >= probability:
        return img
    h, w = img.shape[-2:]
    # Ratio is height / width here (timm's convention for erasing), so heights go first.
    box = random_box((h, w), scale, ratio, gen, smaller=True)
    if box is None:
        return img
    top, left, eh, ew = box
    out = img.clone()
    noise_shape = (*img.shape[:-2], eh, ew)
    out[..., top : top + eh, left : left + ew] = torch.randn(
        noise_shape, generator=gen, dtype=img.dtype
    )
    return out


def augment_before_normalise(
    img: torch.Tensor, config: DataConfig, gen: torch.Generator
) -> torch.Tensor:
    """The configured auto-augment policy, then colour jitter (images in [0, 1])."""
    if config.auto_augment == "trivial":
        img = trivial_augment(img, gen)
    elif config.auto_augment == "rand":
        img = rand_augment(img, gen, config.aug_ops, config.aug_magnitude)
    if config.color_jitter > 0:
        img = color_jitter(img, config.color_jitter, gen)
    return img


def augment_after_normalise(
    img: torch.Tensor, config: DataConfig, gen: torch.Generator
) -> torch.Tensor:
    return random_erasing(img, config.random_erasing, config.erasing_scale, gen)


__all__ = [
    "OP_NAMES",
    "affine",
    "apply_op",
    "augment_after_normalise",
    "augment_before_normalise",
    "autocontrast",
    "color_jitter",
    "equalize",
    "rand_augment",
    "random_erasing",
    "trivial_augment",
]
