"""Image and clip folders (or CSV label tables), augmentation, deterministic shardable batching.

Randomness here never touches the global RNG: the order of an epoch comes from a generator
seeded with ``(seed, epoch)`` and each sample's augmentation from one seeded with
``(seed, epoch, index)``. So a resumed run, a run with data-loader workers and a run split over
several processes all see exactly the same images in the same order as one uninterrupted run.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from vitzoo.spec.sections import DataConfig
from vitzoo.training.augment import augment_after_normalise, augment_before_normalise, random_box

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


VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
ARRAY_SUFFIXES = frozenset({".npy", ".npz"})


def is_clip(path: Path) -> bool:
    """A clip is a folder of frames, a ``.npy``/``.npz`` array or a video file."""
    if path.is_dir():
        return True
    return path.suffix.lower() in ARRAY_SUFFIXES | VIDEO_SUFFIXES


def check_clip(path: Path) -> str | None:
    """Why ``path`` cannot be used as a clip, or ``None`` (cheap: headers, not pixels)."""
    try:
        if path.is_dir():
            if not frame_files(path):
                return "no image frames in the folder"
            return None
        suffix = path.suffix.lower()
        if suffix == ".npy":
            array = np.load(path, mmap_mode="r")
            return _array_problem(array.shape)
        if suffix == ".npz":
            with np.load(path) as archive:
                if not archive.files:
                    return "empty .npz archive"
                return _array_problem(archive[_frames_key(archive)].shape)
        if path.stat().st_size == 0:
            return "empty file"
    except Exception as exc:  # numpy raises many types for bad files; all mean "unusable"
        return f"{type(exc).__name__}: {exc}"
    return None


def _frames_key(archive: np.lib.npyio.NpzFile) -> str:
    """The array of a ``.npz`` clip: the one named ``frames``, else the first."""
    return "frames" if "frames" in archive.files else archive.files[0]


def _array_problem(shape: tuple[int, ...]) -> str | None:
    if len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3, 4)):
        return None if shape[0] > 0 else "no frames"
    return f"array of shape {tuple(shape)} is not (T, H, W) or (T, H, W, C) with C in 1, 3, 4"


def check_sample(path: Path, kind: str) -> str | None:
    """Why ``path`` cannot be used as a ``kind`` (``"image"`` / ``"clip"``) sample, or ``None``."""
    return check_image(path) if kind == "image" else check_clip(path)


def frame_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclass
class SampleIndex:
    """The labelled files of one split: ``(path, label)`` pairs, found by scanning
    ``root/<class>/<file>`` (class names sorted) or read from a CSV table; bad files skipped.

    Only paths and labels -- nothing is decoded here; :class:`FolderDataset` is the torch
    ``Dataset`` that reads and transforms the samples an index lists.

    ``kind`` is ``"image"`` (files, searched recursively) or ``"clip"`` (each entry of a class
    folder is one clip: a folder of frames, a ``.npy``/``.npz`` array, or a video file).
    ``classes`` fixes the label order (the training split's, when this is the validation split);
    ``strict`` turns the first unreadable file into a :class:`DataError` instead of a skip.
    ``empty`` lists classes that exist (as a folder) but hold nothing usable.
    """

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    kind: str = "image"
    empty: list[str] = field(default_factory=list)

    @classmethod
    def scan(
        cls,
        root: str | Path,
        classes: Sequence[str] | None = None,
        *,
        strict: bool = False,
        kind: str = "image",
    ) -> SampleIndex:
        root = Path(root)
        what = "<image>" if kind == "image" else "<clip>"
        if not root.is_dir():
            raise DataError(f"{root}: no such dataset folder (expected {root}/<class>/{what})")
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
            raise DataError(f"{root}: no class folders (expected {root}/<class>/{what})")
        samples: list[tuple[Path, int]] = []
        skipped: list[tuple[Path, str]] = []
        empty: list[str] = []
        for label, name in enumerate(classes):
            folder = root / name
            if not folder.is_dir():
                continue
            before = len(samples)
            for path in _candidates(folder, kind):
                problem = check_sample(path, kind)
                if problem is None:
                    samples.append((path, label))
                elif strict:
                    raise DataError(f"{path}: unreadable {kind} ({problem})")
                else:
                    skipped.append((path, problem))
            if len(samples) == before:
                empty.append(name)
        if not samples:
            raise DataError(f"{root}: no readable {kind}s in {list(classes)}")
        return cls(root, list(classes), samples, skipped, kind, empty)

    @classmethod
    def from_csv(
        cls,
        csv_path: str | Path,
        classes: Sequence[str] | None = None,
        *,
        strict: bool = False,
        kind: str = "image",
    ) -> SampleIndex:
        """``path,label`` rows (a ``path,label`` header is optional); paths are relative to the
        CSV's folder. Classes are the sorted distinct labels of the training table."""
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise DataError(f"{csv_path}: no such label table (expected 'path,label' rows)")
        rows: list[tuple[int, str, str]] = []
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                if len(row) < 2:
                    raise DataError(f"{csv_path}:{number}: expected 'path,label', got {row!r}")
                path, label = row[0].strip(), row[1].strip()
                if number == 1 and (path.lower(), label.lower()) == ("path", "label"):
                    continue
                rows.append((number, path, label))
        if not rows:
            raise DataError(f"{csv_path}: no 'path,label' rows")
        labels = sorted({label for _, _, label in rows})
        if classes is None:
            classes = labels
        else:
            unknown = sorted(set(labels) - set(classes))
            if unknown:
                raise DataError(
                    f"{csv_path}: labels {unknown} are not among the training classes "
                    f"{list(classes)}"
                )
        index = {name: i for i, name in enumerate(classes)}
        samples: list[tuple[Path, int]] = []
        skipped: list[tuple[Path, str]] = []
        for number, relative, label in rows:
            path = csv_path.parent / relative
            if not path.exists():
                problem = "no such file"
            else:
                problem = check_sample(path, kind)
            if problem is None:
                samples.append((path, index[label]))
            elif strict:
                raise DataError(f"{csv_path}:{number}: {path}: unusable {kind} ({problem})")
            else:
                skipped.append((path, problem))
        if not samples:
            raise DataError(f"{csv_path}: no readable {kind}s")
        return cls(csv_path.parent, list(classes), samples, skipped, kind, [])

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for _, label in self.samples:
            counts[label] += 1
        return counts


def _candidates(folder: Path, kind: str) -> list[Path]:
    if kind == "image":
        return [
            p
            for p in sorted(folder.rglob("*"))
            if not p.name.startswith(".") and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        ]
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and is_clip(p)]


# --------------------------------------------------------------------------------------------
# Reading clips
# --------------------------------------------------------------------------------------------
def _array_frames(array: np.ndarray, indices: Sequence[int], channels: int) -> list[Image.Image]:
    frames = []
    for i in indices:
        frame = np.asarray(array[i])
        if frame.dtype != np.uint8:
            scale = 255.0 if float(np.nanmax(frame, initial=0.0)) <= 1.0 else 1.0
            frame = np.clip(np.nan_to_num(frame.astype(np.float64)) * scale, 0, 255)
            frame = frame.round().astype(np.uint8)
        if frame.ndim == 3 and frame.shape[-1] == 1:
            frame = frame[..., 0]
        img = Image.fromarray(frame)
        frames.append(img.convert("RGB" if channels == 3 else "L"))
    return frames


def _video_frames(path: Path) -> list[np.ndarray]:
    try:
        import av  # PyAV: the optional 'video' extra
    except ImportError:
        raise DataError(
            f"{path}: reading video files needs PyAV (pip install 'vitzoo[video]'); "
            "or store clips as frame folders or .npy arrays"
        ) from None
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def clip_length(path: Path) -> int:
    if path.is_dir():
        return len(frame_files(path))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    if suffix == ".npz":
        with np.load(path) as archive:
            return int(archive[_frames_key(archive)].shape[0])
    return len(_video_frames(path))


def read_clip(
    path: Path, frames: int, channels: int, gen: torch.Generator | None, jitter: bool
) -> list[Image.Image]:
    """``frames`` frames of the clip at ``path``, sampled by :func:`frame_indices`."""
    if path.is_dir():
        files = frame_files(path)
        return [
            open_image(files[i], channels) for i in frame_indices(len(files), frames, gen, jitter)
        ]
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, mmap_mode="r")
    elif suffix == ".npz":
        with np.load(path) as archive:
            array = archive[_frames_key(archive)]
    else:
        array = np.stack(_video_frames(path))
    return _array_frames(array, frame_indices(len(array), frames, gen, jitter), channels)


def frame_indices(
    length: int, frames: int, gen: torch.Generator | None, jitter: bool = True
) -> list[int]:
    """Segment sampling (TSN, Wang et al. 2016): cut the clip into ``frames`` equal segments
    and take one frame from each -- a random one when training with ``jitter`` (``gen`` given),
    else the middle one. A clip shorter than ``frames`` repeats frames in order."""
    if length < 1:
        raise DataError("a clip needs at least one frame")
    out = []
    for i in range(frames):
        start, stop = i * length / frames, (i + 1) * length / frames
        offset = float(torch.rand((), generator=gen)) if gen is not None and jitter else 0.5
        out.append(min(length - 1, int(start + offset * (stop - start))))
    return out


# --------------------------------------------------------------------------------------------
# Transforms (Pillow + torch; no torchvision)
# --------------------------------------------------------------------------------------------
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
        size = tuple(getattr(model, "input_size", ()))
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

    When ``train``: random resized crop + flip (one box for every frame of a clip), then the
    configured tensor augmentations (:mod:`vitzoo.training.augment`), all drawn from ``gen``.
    """

    size: tuple[int, int]
    channels: int
    config: DataConfig
    train: bool

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
        tensors = []
        for frame in frames:
            if frame.size != (width, height):
                frame = frame.resize((width, height), Image.Resampling.BICUBIC)
            frame = frame.resize((self.size[1], self.size[0]), Image.Resampling.BICUBIC, box=box)
            if flip:
                frame = ImageOps.mirror(frame)
            array = np.asarray(frame, dtype=np.float32) / 255.0
            tensor = torch.from_numpy(array.reshape(self.size[0], self.size[1], -1).copy())
            tensors.append(tensor.permute(2, 0, 1))
        tensor = torch.stack(tensors)  # (T, C, H, W)
        if self.train:
            tensor = augment_before_normalise(tensor, self.config, gen)
        mean = _per_channel(self.config.mean, self.channels)
        std = _per_channel(self.config.std, self.channels)
        tensor = (tensor - mean) / std
        if self.train:
            tensor = augment_after_normalise(tensor, self.config, gen)
        if isinstance(img, Image.Image):
            return tensor[0]
        return tensor.permute(1, 0, 2, 3).contiguous()  # (C, T, H, W)


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
    """Decoded, transformed samples of a :class:`SampleIndex`.

    Items are ``(index, epoch)`` pairs so the augmentation generator is a pure function of the
    sample and the epoch, whichever process or worker loads it. A file that passed the scan but
    fails to decode (a truncated JPEG) is reported and replaced by the next readable sample, or
    raises :class:`DataError` when ``strict``.
    """

    def __init__(
        self,
        folder: SampleIndex,
        transform: Transform,
        *,
        seed: int,
        strict: bool = False,
        frames: int | None = None,
    ) -> None:
        self.folder = folder
        self.transform = transform
        self.seed = seed
        self.strict = strict
        #: Frames per clip (the model's T) when ``folder.kind == "clip"``.
        self.frames = frames
        if folder.kind == "clip" and not frames:
            raise ValueError("a clip dataset needs the model's number of frames")

    def load(self, path: Path, gen: torch.Generator | None) -> Image.Image | list[Image.Image]:
        """Decode one sample (a clip: its sampled frames, drawing the jitter from ``gen``)."""
        if self.folder.kind == "clip":
            jitter = self.transform.config.temporal_jitter
            return read_clip(path, self.frames, self.transform.channels, gen, jitter)
        return open_image(path, self.transform.channels)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = item
        for attempt in range(len(self.folder)):
            path, label = self.folder.samples[(index + attempt) % len(self.folder)]
            gen = generator(self.seed, epoch, index) if self.transform.train else None
            try:
                img = self.load(path, gen)
            except Exception as exc:  # decoding errors come in many types
                if self.strict:
                    raise DataError(f"{path}: unreadable {self.folder.kind} ({exc})") from None
                warnings.warn(f"skipping unreadable {self.folder.kind} {path}: {exc}", stacklevel=2)
                continue
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
        sample_weights: torch.Tensor | None = None,
        start_step: int = 0,
    ) -> None:
        self.size, self.batch_size, self.epoch, self.seed = size, batch_size, epoch, seed
        self.train, self.rank, self.world = train, rank, world
        #: Training only: draw the epoch with replacement in proportion to these weights.
        self.sample_weights = sample_weights
        #: Training only: skip this many global steps (resuming inside an epoch).
        self.start_step = start_step

    def global_steps(self) -> int:
        return (
            self.size // self.batch_size if self.train else math.ceil(self.size / self.batch_size)
        )

    def __len__(self) -> int:
        return self.global_steps() - (self.start_step if self.train else 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.train:
            gen = generator(self.seed, self.epoch, -1)
            if self.sample_weights is None:
                order = torch.randperm(self.size, generator=gen)
            else:
                order = torch.multinomial(
                    self.sample_weights.double(), self.size, replacement=True, generator=gen
                )
            local = self.batch_size // self.world
            for step in range(self.start_step, self.global_steps()):
                start = step * self.batch_size + self.rank * local
                yield [(int(i), self.epoch) for i in order[start : start + local]]
        else:
            mine = list(range(self.rank, self.size, self.world))
            local = max(1, math.ceil(self.batch_size / self.world))
            for start in range(0, len(mine), local):
                yield [(i, self.epoch) for i in mine[start : start + local]]


def balanced_weights(folder: SampleIndex) -> torch.Tensor:
    """Per-sample weights that make every (non-empty) class equally likely to be drawn."""
    counts = folder.class_counts()
    return torch.tensor([1.0 / counts[label] for _, label in folder.samples], dtype=torch.float64)


def loader(
    dataset: FolderDataset,
    sampler: EpochBatches,
    num_workers: int,
    generator: torch.Generator | None = None,
) -> torch.utils.data.DataLoader:
    """``generator`` seeds the workers instead of a draw from the global RNG."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=False,
        generator=generator,
    )
