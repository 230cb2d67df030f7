"""Reading and checking images and clips: the one place a file becomes Pillow frames.

Every path that feeds a model (training, ``evaluate``, ``predict``, ``attention``) decodes here,
so a transparent PNG, a 16-bit greyscale scan or a ``.npy`` clip comes out the same way
everywhere. Checks are cheap (headers, not pixels) because a folder scan runs them on every
file; decoding errors that only show on a full read are handled where samples are loaded
(:class:`vitzoo.data.folders.FolderDataset`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vitzoo.errors import DataError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
ARRAY_SUFFIXES = frozenset({".npy", ".npz"})


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


def image_mode(channels: int) -> str:
    """The Pillow mode a ``channels``-channel model reads: ``RGB`` for 3, else ``L``."""
    return "RGB" if channels == 3 else "L"


def convert_image(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as an ``RGB`` (3 channels) or ``L`` (1 channel) image.

    Transparent images are composited on white (dropping alpha would turn transparent pixels
    into whatever colour they happen to store); 16-bit and float greyscale are rescaled to 8 bits.
    """
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
    return img.convert(image_mode(channels))


def open_image(path: str | Path, channels: int) -> Image.Image:
    """Decode ``path`` into the mode a ``channels``-channel model reads (:func:`convert_image`)."""
    with Image.open(path) as img:
        img.load()
        return convert_image(img, channels)


def check_image(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or ``None`` if its header and data verify."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.verify()
                if img.size[0] < 1 or img.size[1] < 1:
                    return "empty image"
    except UnidentifiedImageError:  # the usual case: say it without Pillow's exception name
        return "not an image file Pillow can read (PNG, JPEG, ...)"
    except Exception as exc:  # Pillow raises many types for bad files; all mean "unusable"
        return f"{type(exc).__name__}: {exc}"
    return None


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
    """The image files of a frame-folder clip, in name order (the frame order)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


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
        frames.append(img.convert(image_mode(channels)))
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
