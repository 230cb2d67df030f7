"""Synthetic ImageFolder datasets and tiny specs shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: A ViT small enough to train a few epochs in about a second on one core.
TINY_SPEC: dict[str, Any] = {
    "model": {
        "type": "vit",
        "image_size": 16,
        "num_classes": 2,
        "dim": 32,
        "depth": 1,
        "num_heads": 2,
        "patch": {"type": "linear", "patch_size": 8},
    },
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.003, "warmup_epochs": 0.5, "log_every": 1},
    "data": {"scale": [0.5, 1.0]},
}


def pattern(label: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Class 0 lights the top half, class 1 the bottom, class 2 the centre (flip-invariant)."""
    w, h = size
    img = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
    if label == 0:
        img[: h // 2] += 150
    elif label == 1:
        img[h // 2 :] += 150
    else:
        img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] += 150
    return img


def make_dataset(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog"),
    per_class: int = 8,
    val_per_class: int = 4,
    *,
    odd_formats: bool = True,
    seed: int = 0,
) -> Path:
    """``root/{train,val}/<class>/*`` with RGB JPEGs plus, when ``odd_formats``, greyscale,
    RGBA and oddly sized PNGs in every class."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = (24, 20) if odd_formats and i % 4 == 1 else (16, 16)
                img = Image.fromarray(pattern(label, size, rng), mode="RGB")
                if odd_formats and i % 4 == 2:
                    img.convert("L").save(folder / f"{i}.png")
                elif odd_formats and i % 4 == 3:
                    rgba = img.convert("RGBA")
                    rgba.putalpha(200)
                    rgba.save(folder / f"{i}.png")
                else:
                    img.save(folder / f"{i}.jpg", quality=95)
    return root
