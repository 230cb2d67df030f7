"""Patchifiers: image (B, C, H, W) or video (B, C, T, H, W) -> tokens (B, N, D) and their grid."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.layers import to_pair
from vitzoo.config import ComponentConfig, SizeOrPair, SpecValueError


class Patchifier(nn.Module):
    """Interface: ``forward(x) -> (tokens, grid)``; ``grid_for(image_size)`` without running it."""

    #: Input dimensionality without batch and channels: 2 for images, 3 for video/volumes.
    spatial_dims: int = 2

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError


def check_divisible(image_size: Any, patch_size: Any, field: str = "patch_size") -> None:
    """Spec-time check that a patch (or stride) size tiles the image exactly."""
    sizes = to_pair(image_size, len(to_pair(patch_size)))
    patch = to_pair(patch_size, len(sizes))
    for axis, (size, p) in enumerate(zip(sizes, patch, strict=True)):
        if size % p:
            allowed = [d for d in range(1, size + 1) if size % d == 0]
            raise SpecValueError(
                field,
                f"patch size {p} does not divide image size {size} (axis {axis}); "
                f"allowed for this image size: {allowed}",
            )


class LinearPatchConfig(ComponentConfig):
    """Non-overlapping patches, each linearly projected (the original ViT patch embedding)."""

    type: Literal["linear"] = "linear"
    patch_size: SizeOrPair = 16
    bias: bool = True
    #: Accept an image size the patch size does not divide: the last rows / columns that do not
    #: fill a patch are left out, as a strided convolution does. SigLIP So400m/14 is released
    #: at 384 px (27 x 27 patches read 378 px of it); off, such a size is a spec error.
    crop_remainder: bool = False

    def check(self, image_size: Any = None, **_: Any) -> None:
        if image_size is not None and not self.crop_remainder:
            check_divisible(image_size, self.patch_size)

    def token_grid(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        """The patch grid an image of ``image_size`` gives (known before building)."""
        patch = to_pair(self.patch_size, len(image_size))
        return tuple(s // p for s, p in zip(image_size, patch, strict=True))


class LinearPatchEmbed(Patchifier):
    """A strided convolution, which is exactly a shared linear map over flattened patches."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        patch_size: tuple[int, int],
        bias: bool = True,
        crop_remainder: bool = False,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.crop_remainder = crop_remainder
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // p for s, p in zip(image_size, self.patch_size, strict=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 4:
            raise ValueError(
                f"linear patchifier expects images (B, C, H, W), got shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        ph, pw = self.patch_size
        if (h % ph or w % pw) and not self.crop_remainder:
            raise ValueError(
                f"image size {(h, w)} is not divisible by patch size {self.patch_size}"
            )
        x = self.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid


def build_linear_patch(config: LinearPatchConfig, ctx: BuildContext) -> LinearPatchEmbed:
    """Linear patch embedding (ViT)."""
    return LinearPatchEmbed(
        ctx.in_chans,
        ctx.dim,
        to_pair(config.patch_size),  # type: ignore[arg-type]
        config.bias,
        config.crop_remainder,
    )
