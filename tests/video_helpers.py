"""A generated clip dataset: stripes drifting across the frame; the class is the direction of
motion (down, left, right, up), which no single frame shows. Shared by the video tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DIRECTIONS = {"down": (1, 0), "left": (0, -1), "right": (0, 1), "up": (-1, 0)}

#: A ViViT (factorised encoder) small enough to learn the directions in seconds.
TINY_VIVIT = {
    "model": {
        "type": "vivit",
        "image_size": 16,
        "frames": 4,
        "in_chans": 1,
        "num_classes": 4,
        "dim": 32,
        "spatial_depth": 1,
        "temporal_depth": 1,
        "num_heads": 2,
        "patch": {"type": "tubelet", "patch_size": 8, "frame_patch_size": 2},
        "pool": "mean",
    },
    "train": {"epochs": 8, "batch_size": 8, "lr": 0.003, "warmup_epochs": 0.5, "log_every": 100},
    "objective": {"type": "supervised", "label_smoothing": 0.0},
    # Flipping or cropping would change the direction or move the square off the frame.
    "data": {"hflip": 0.0, "scale": [0.9, 1.0], "ratio": [0.95, 1.05], "mean": [0.5], "std": [0.5]},
}


def drifting_stripes(direction: str, rng: np.random.Generator, frames: int = 8, size: int = 16):
    """(frames, size, size) uint8: sine stripes (period 8 px, random phase, light noise)
    drifting 1 px per frame along ``direction`` -- every patch carries the motion."""
    dy, dx = DIRECTIONS[direction]
    yy, xx = np.mgrid[0:size, 0:size]
    phase = rng.uniform(0, 2 * np.pi)
    clip = np.stack(
        [np.sin(2 * np.pi * ((xx * dx + yy * dy) - t) / 8.0 + phase) for t in range(frames)]
    )
    clip = 0.5 + 0.4 * clip + rng.uniform(-0.08, 0.08, size=clip.shape)
    return (np.clip(clip, 0, 1) * 255).round().astype(np.uint8)


def make_clip_dataset(root: Path, per_class: int = 10, val_per_class: int = 4, seed: int = 0):
    """``root/{train,val}/<direction>/<clip>``: .npy arrays, plus one .npz and one folder of
    PNG frames per class, so every clip reader is exercised."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for name in DIRECTIONS:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                clip = drifting_stripes(name, rng)
                if i == 0:
                    frames = folder / f"clip{i}"
                    frames.mkdir()
                    for t, frame in enumerate(clip):
                        Image.fromarray(frame, mode="L").save(frames / f"{t:03d}.png")
                elif i == 1:
                    np.savez(folder / f"clip{i}.npz", frames=clip)
                else:
                    np.save(folder / f"clip{i}.npy", clip)
    return root
