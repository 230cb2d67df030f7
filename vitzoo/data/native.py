"""Native-resolution input: each image keeps its aspect ratio under a patch budget.

With ``data.max_patches`` set, ``train``, ``evaluate`` and ``predict`` stop resizing every image
to the model's square: each image (after the usual crop) is resized, aspect ratio kept, to the
largest size whose patch grid holds at most ``max_patches`` patches, each side a multiple of the
patch size (and within the largest grid the model's positions cover). Images of a batch then
differ in size, so the loader hands the model an :class:`~vitzoo.components.packing.ImageList`
instead of one stacked tensor, and the model packs them greedily into shared sequences
(:mod:`vitzoo.components.packing`). A model takes such batches when it says how
(``model.native_resolution``: its patch size and largest grid): NaViT and SigLIP 2 NaFlex.

The size rule is SigLIP 2's NaFlex one (its processors': scale the image so the patch grid of the
scaled sides, each rounded *up* to a whole patch, fills the budget as far as it can -- small
images are enlarged, large ones shrunk), written here from that description: a bisection on the
scale factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vitzoo.components.packing import ImageList
from vitzoo.errors import DataError


@dataclass(frozen=True)
class NativeSizing:
    """How a native-resolution model wants its images sized."""

    #: (height, width) of one patch: each side of an image is a multiple of it.
    patch_size: tuple[int, int]
    #: At most this many patches per image (the patch budget, ``data.max_patches``).
    max_patches: int
    #: The largest (rows, columns) patch grid the model's positions cover (None: any).
    max_grid: tuple[int, int] | None = None

    @classmethod
    def of(cls, model: Any, max_patches: int) -> NativeSizing:
        """From ``model.native_resolution``; a model without one cannot take such batches."""
        native = getattr(model, "native_resolution", None)
        if native is None:
            raise DataError(
                f"data.max_patches needs a model that takes images of different sizes (navit, "
                f"siglip2-naflex); {type(model).__name__} takes one size only -- remove "
                "data.max_patches to resize every image to the model's size"
            )
        patch = tuple(int(p) for p in native.patch_size)
        grid = None if native.max_grid is None else tuple(int(g) for g in native.max_grid)
        return cls(patch, int(max_patches), grid)  # type: ignore[arg-type]

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        """``(H, W)`` for an image of ``height`` x ``width``: see :func:`native_size`."""
        return native_size(height, width, self.patch_size, self.max_patches, self.max_grid)


def _grid(height: int, width: int, scale: float, patch: tuple[int, int]) -> tuple[int, int]:
    """Patch rows and columns of the image scaled by ``scale`` (each side rounded up, >= 1)."""
    return (
        max(1, math.ceil(height * scale / patch[0])),
        max(1, math.ceil(width * scale / patch[1])),
    )


def native_size(
    height: int,
    width: int,
    patch: tuple[int, int],
    max_patches: int,
    max_grid: tuple[int, int] | None = None,
    *,
    upscale: bool = True,
) -> tuple[int, int]:
    """The largest aspect-preserving size of a ``height`` x ``width`` image whose patch grid has
    at most ``max_patches`` cells (and fits ``max_grid``), each side a whole number of patches.
    ``upscale=False`` never enlarges an image beyond its own size (rounded up to whole patches):
    small images keep their native resolution and take fewer patches.

    Bisection on the scale factor: the grid only grows with the scale, so the largest scale that
    fits is found to ~1e-6 relative. Rounding each side up to a whole patch distorts the aspect
    ratio by less than one patch per side.
    """
    if height < 1 or width < 1:
        raise DataError(f"an image of {height}x{width} pixels has nothing to resize")

    def fits(scale: float) -> bool:
        rows, cols = _grid(height, width, scale, patch)
        inside = max_grid is None or (rows <= max_grid[0] and cols <= max_grid[1])
        return rows * cols <= max_patches and inside

    low, high = 1e-6 / max(height, width), (1e3 if upscale else 1.0)
    if not upscale and fits(high):
        low = high
    if not fits(low):  # even one patch per side is too many (max_patches < 1 cannot happen)
        return patch
    while high - low > 1e-7 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    rows, cols = _grid(height, width, low, patch)
    return rows * patch[0], cols * patch[1]


def collate_native(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[ImageList, torch.Tensor]:
    """A loader's ``collate_fn`` for native-resolution batches: the images as an
    :class:`ImageList` (their sizes differ), the labels stacked."""
    images = ImageList(image for image, _ in batch)
    return images, torch.tensor([label for _, label in batch], dtype=torch.long)
