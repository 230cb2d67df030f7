"""Image folders read with Pillow, augmentation, and deterministic, shardable batching.

Randomness here never touches the global RNG: the order of an epoch comes from a generator
seeded with ``(seed, epoch)`` and each sample's augmentation from one seeded with
``(seed, epoch, index)``. So a resumed run, a run with data-loader workers and a run split over
several processes all see exactly the same images in the same order as one uninterrupted run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from vitzoo.training.config import DataConfig

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)


class DataError(ValueError):
    """The dataset folder is missing, empty, or (with ``strict``) holds an unreadable image."""


def _seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (stable across processes and Python versions)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9
        value &= 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def generator(*parts: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(_seed(*parts))
    return gen


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------
def image_error(path: str | Path, exc: BaseException) -> str:
    """A plain sentence for why ``path`` could not be read as an image (no ``[Errno 2]``)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, FileNotFoundError):
        return f"no such file: {path}"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder, not an image"
    if isinstance(exc, PermissionError):
        return f"permission denied reading {path}"
    if isinstance(exc, UnidentifiedImageError):
        return f"{path} is not an image file Pillow can read (PNG, JPEG, ...)"
    return f"cannot read {path} as an image ({type(exc).__name__}: {exc})"


def open_image(path: str | Path, channels: int) -> Image.Image:
    """Decode ``path`` into an ``RGB`` (3 channels) or ``L`` (1 channel) image.

    Transparent images are composited on white (dropping alpha would turn transparent pixels
    into whatever colour they happen to store); 16-bit and float greyscale are rescaled to 8 bits.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            array = np.asarray(img, dtype=np.float64)
            low, high = float(array.min()), float(array.max())
            array = (array - low) / (high - low or 1.0) * 255.0
            img = Image.fromarray(array.round().astype(np.uint8), mode="L")
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return img.convert("RGB" if channels == 3 else "L")


def check_image(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or ``None`` if its header and data verify."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.verify()
                if img.size[0] < 1 or img.size[1] < 1:
                    return "empty image"
    except Exception as exc:  # Pillow raises many types for bad files; all mean "unusable"
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class ImageFolder:
    """``root/<class>/<image>`` with class names sorted; bad files recorded and skipped.

    ``classes`` fixes the label order (the training split's, when this is the validation split);
    ``strict`` turns the first unreadable file into a :class:`DataError` instead of a skip.
    """

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @classmethod
    def scan(
        cls, root: str | Path, classes: Sequence[str] | None = None, *, strict: bool = False
    ) -> ImageFolder:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: no such dataset folder (expected {root}/<class>/<image>)")
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            classes = found
        else:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise DataError(
                    f"{root}: classes {unknown} are not among the training classes {list(classes)}"
                )
        if not classes:
            raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>)")
        samples: list[tuple[Path, int]] = []
        skipped: list[tuple[Path, str]] = []
        for label, name in enumerate(classes):
            folder = root / name
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if path.name.startswith(".") or not path.is_file():
                    continue
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                problem = check_image(path)
                if problem is None:
                    samples.append((path, label))
                elif strict:
                    raise DataError(f"{path}: unreadable image ({problem})")
                else:
                    skipped.append((path, problem))
        if not samples:
            raise DataError(f"{root}: no readable images in {list(classes)}")
        return cls(root, list(classes), samples, skipped)

    def __len__(self) -> int:
        return len(self.samples)


# --------------------------------------------------------------------------------------------
# Transforms (Pillow + torch; no torchvision)
# --------------------------------------------------------------------------------------------
def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator,
) -> tuple[int, int, int, int]:
    """A random box covering ``scale`` of the area with aspect ``ratio`` (Inception-style)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
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
    w, h = max(1, round(width * fraction)), max(1, round(height * fraction))
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


@dataclass(frozen=True)
class Transform:
    """Image -> normalised (C, H, W) tensor; random crop + flip when ``train``."""

    size: tuple[int, int]
    channels: int
    config: DataConfig
    train: bool

    def __call__(self, img: Image.Image, gen: torch.Generator | None = None) -> torch.Tensor:
        width, height = img.size
        if self.train:
            if gen is None:
                raise ValueError("training transforms need a seeded generator")
            box = random_resized_crop_box(width, height, self.config.scale, self.config.ratio, gen)
        else:
            box = centre_crop_box(width, height, self.config.eval_crop)
        img = img.resize((self.size[1], self.size[0]), Image.Resampling.BICUBIC, box=box)
        if self.train and float(torch.rand((), generator=gen)) < self.config.hflip:
            img = ImageOps.mirror(img)
        array = np.asarray(img, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.reshape(self.size[0], self.size[1], -1).copy())
        tensor = tensor.permute(2, 0, 1)
        mean = _per_channel(self.config.mean, self.channels)
        std = _per_channel(self.config.std, self.channels)
        return (tensor - mean) / std


def _per_channel(values: tuple[float, ...], channels: int) -> torch.Tensor:
    if len(values) == channels:
        out = list(values)
    elif len(values) == 1:
        out = list(values) * channels
    else:  # three statistics for a one-channel model: use their average
        out = [sum(values) / len(values)] * channels
    return torch.tensor(out, dtype=torch.float32).view(channels, 1, 1)


# --------------------------------------------------------------------------------------------
# Datasets and batching
# --------------------------------------------------------------------------------------------
class FolderDataset(torch.utils.data.Dataset):
    """Decoded, transformed samples of an :class:`ImageFolder`.

    Items are ``(index, epoch)`` pairs so the augmentation generator is a pure function of the
    sample and the epoch, whichever process or worker loads it. A file that passed the scan but
    fails to decode (a truncated JPEG) is reported and replaced by the next readable sample, or
    raises :class:`DataError` when ``strict``.
    """

    def __init__(
        self, folder: ImageFolder, transform: Transform, *, seed: int, strict: bool = False
    ) -> None:
        self.folder = folder
        self.transform = transform
        self.seed = seed
        self.strict = strict

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = item
        for attempt in range(len(self.folder)):
            path, label = self.folder.samples[(index + attempt) % len(self.folder)]
            try:
                img = open_image(path, self.transform.channels)
            except Exception as exc:  # decoding errors come in many types
                if self.strict:
                    raise DataError(f"{path}: unreadable image ({exc})") from None
                warnings.warn(f"skipping unreadable image {path}: {exc}", stacklevel=2)
                continue
            gen = generator(self.seed, epoch, index) if self.transform.train else None
            return self.transform(img, gen), label
        raise DataError(f"{self.folder.root}: no image could be decoded")


class EpochBatches(torch.utils.data.Sampler):
    """Batches of ``(index, epoch)`` for one process of ``world``.

    Training: a seeded permutation per epoch, cut into global batches of ``batch_size`` (the last
    partial batch dropped so every step has the same size on every process); each process takes
    its contiguous ``batch_size // world`` slice. Evaluation: every sample once, in order, split
    round-robin across processes.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        epoch: int,
        seed: int,
        train: bool,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.size, self.batch_size, self.epoch, self.seed = size, batch_size, epoch, seed
        self.train, self.rank, self.world = train, rank, world

    def global_steps(self) -> int:
        return (
            self.size // self.batch_size if self.train else math.ceil(self.size / self.batch_size)
        )

    def __len__(self) -> int:
        return self.global_steps()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.train:
            order = torch.randperm(self.size, generator=generator(self.seed, self.epoch, -1))
            local = self.batch_size // self.world
            for step in range(self.global_steps()):
                start = step * self.batch_size + self.rank * local
                yield [(int(i), self.epoch) for i in order[start : start + local]]
        else:
            mine = list(range(self.rank, self.size, self.world))
            local = max(1, math.ceil(self.batch_size / self.world))
            for start in range(0, len(mine), local):
                yield [(i, self.epoch) for i in mine[start : start + local]]


def loader(
    dataset: FolderDataset, sampler: EpochBatches, num_workers: int
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=False,
    )
