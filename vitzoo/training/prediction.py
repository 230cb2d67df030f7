"""``vitzoo predict`` at scale: folders and file lists in, one row per input out, in batches.

Inputs are files, folders (searched recursively for images; for a video checkpoint, a folder
that is not itself a clip holds clips) and lists of paths (``--from-file``). A
:class:`~torch.utils.data.DataLoader` with workers decodes and preprocesses them (the checkpoint's
evaluation preprocessing, :mod:`vitzoo.data`); the model runs on whole batches; rows come back in
input order, each with the top-k classes and probabilities, or with the error that kept the
input from being read -- an unreadable file never stops the run. ``flip=True`` averages the
probabilities of each image and its mirror image (test-time augmentation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.components.packing import ImageList
from vitzoo.data.config import ResolvedDataConfig
from vitzoo.data.images import (
    IMAGE_SUFFIXES,
    DataError,
    image_error,
    is_clip,
    open_image,
    read_clip,
)
from vitzoo.data.transforms import Transform, create_transform
from vitzoo.training.objective import classification_logits

#: Progress callback: (inputs done, inputs in total).
Progress = Callable[[int, int], None]


def read_path_list(list_file: Path) -> list[Path]:
    """One path per line (blank lines and ``#`` comments skipped), as written."""
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise DataError(f"{list_file}: cannot read the file list ({exc.strerror})") from None
    return [Path(s.strip()) for s in lines if s.strip() and not s.lstrip().startswith("#")]


def expand(path: Path, clips: bool) -> list[Path]:
    """A file as itself; a folder as its images (recursively, sorted) or, for a video model,
    as a clip when it is one, else its clips. A path that does not exist stays (its row will
    say so)."""
    if not path.is_dir():
        return [path]
    if clips:
        if is_clip(path):
            return [path]
        return [p for p in sorted(path.iterdir()) if not p.name.startswith(".") and is_clip(p)]
    return [
        p
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]


def collect_inputs(
    paths: Iterable[str | Path], from_file: Path | None = None, *, clips: bool = False
) -> list[Path]:
    """Every input, in the order given (folders expanded); a path given twice runs once. A
    folder with nothing to predict is bad input (nothing would be written, silently)."""
    given = [Path(p) for p in paths]
    if from_file is not None:
        given += read_path_list(from_file)
    seen: set[str] = set()
    out = []
    for path in given:
        found = expand(path, clips)
        if path.is_dir() and not found:
            what = "clips" if clips else f"images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            raise DataError(f"{path}: no {what} in this folder or below")
        for item in found:
            if str(item) not in seen:
                seen.add(str(item))
                out.append(item)
    return out


class PredictionInputs(torch.utils.data.Dataset):
    """Preprocessed inputs by position; an unreadable one is its error message instead."""

    def __init__(self, paths: Sequence[Path], transform: Transform, frames: int | None) -> None:
        self.paths, self.transform, self.frames = list(paths), transform, frames

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        path = self.paths[index]
        try:
            if self.frames is not None:
                if not is_clip(path):
                    raise DataError("not a clip (a folder of frames, .npy/.npz or video file)")
                sample = read_clip(path, self.frames, self.transform.channels, None, False)
            else:
                sample = open_image(path, self.transform.channels)
            return index, self.transform(sample), None
        except Exception as exc:  # Pillow and the clip readers raise many types
            return index, None, image_error(path, exc) if self.frames is None else str(exc)


def collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> dict[str, Any]:
    """Stack the readable inputs (images of different sizes -- native resolution, the model
    packs them -- stay a list); keep the errors by position."""
    good = [(i, x) for i, x, _ in items if x is not None]
    return {
        "indices": [i for i, _ in good],
        "images": ImageList.batch([x for _, x in good]) if good else None,
        "errors": {i: e for i, _, e in items if e is not None},
    }


@dataclass(frozen=True)
class PredictOptions:
    top_k: int = 5
    batch_size: int = 64
    num_workers: int = 0
    device: str = "cpu"
    flip: bool = False


def probabilities(model: nn.Module, images: torch.Tensor, flip: bool) -> torch.Tensor:
    """Class probabilities (float32, CPU); ``flip`` averages them with the mirror image's."""
    probs = classification_logits(model(images)).float().softmax(dim=-1)
    if flip:
        mirrored = classification_logits(model(images.flip(-1))).float().softmax(dim=-1)
        probs = (probs + mirrored) / 2
    return probs.cpu()


def predict_rows(
    model: nn.Module,
    classes: Sequence[str],
    data: ResolvedDataConfig,
    paths: Sequence[Path],
    options: PredictOptions,
    progress: Progress | None = None,
) -> Iterator[dict[str, Any]]:
    """One row per path, in order: ``{"path", "top": [{"class", "index", "probability"}]}`` or
    ``{"path", "error"}``."""
    if options.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {options.top_k}")
    k = min(options.top_k, len(classes))
    dataset = PredictionInputs(paths, create_transform(data, train=False), data.frames)
    batches = torch.utils.data.DataLoader(
        dataset,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        collate_fn=collate,
        persistent_workers=False,
    )
    done = 0
    with torch.inference_mode():
        for batch in batches:
            rows: dict[int, dict[str, Any]] = {
                i: {"path": str(paths[i]), "error": e} for i, e in batch["errors"].items()
            }
            if batch["images"] is not None:
                probs = probabilities(model, batch["images"].to(options.device), options.flip)
                values, indices = probs.topk(k, dim=-1)
                for row, i in enumerate(batch["indices"]):
                    top = [
                        {"class": classes[c], "index": int(c), "probability": float(p)}
                        for p, c in zip(values[row].tolist(), indices[row].tolist(), strict=True)
                    ]
                    rows[i] = {"path": str(paths[i]), "top": top}
            for i in sorted(rows):
                yield rows[i]
            done += len(rows)
            if progress is not None:
                progress(done, len(paths))
