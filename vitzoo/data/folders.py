"""Image and clip folders (or CSV label tables), and deterministic shardable batching.

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

import torch
from PIL import Image

from vitzoo.data.images import (
    IMAGE_SUFFIXES,
    DataError,
    check_sample,
    is_clip,
    open_image,
    read_clip,
)
from vitzoo.data.native import collate_native
from vitzoo.data.transforms import Transform


def _seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (stable across processes and Python versions)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9
        value &= 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def generator(*parts: int) -> torch.Generator:
    """A generator seeded from ``parts`` alone (e.g. ``(seed, epoch, index)``)."""
    gen = torch.Generator()
    gen.manual_seed(_seed(*parts))
    return gen


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
        rows = _csv_rows(csv_path)
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
            problem = "no such file" if not path.exists() else check_sample(path, kind)
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


def _csv_rows(csv_path: Path) -> list[tuple[int, str, str]]:
    """``(line number, path, label)`` of a label table; blank and ``#`` lines and an optional
    ``path,label`` header are skipped."""
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
    return rows


def _candidates(folder: Path, kind: str) -> list[Path]:
    if kind == "image":
        return [
            p
            for p in sorted(folder.rglob("*"))
            if not p.name.startswith(".") and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        ]
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and is_clip(p)]


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

    def most_local_batches(self) -> int:
        """The most batches any process of ``world`` gets (rank 0's: evaluation gives it
        the odd samples), so processes that must call a sharded model in step know how often."""
        if self.train:
            return len(self)
        local = max(1, math.ceil(self.batch_size / self.world))
        return math.ceil(math.ceil(self.size / self.world) / local)

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
    """``generator`` seeds the workers instead of a draw from the global RNG. Native-resolution
    datasets (images of different sizes) collate into an ``ImageList``."""
    native = getattr(dataset.transform, "native", None) is not None
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=False,
        generator=generator,
        collate_fn=collate_native if native else None,
    )
