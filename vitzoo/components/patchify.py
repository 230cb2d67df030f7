"""Patchifiers: image (B, C, H, W) or video (B, C, T, H, W) -> tokens (B, N, D) and their grid."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.layers import to_pair
from vitzoo.components.norms import make_norm
from vitzoo.config import ComponentConfig, PositiveFloat, SizeOrPair, SpecValueError

#: A norm a patchifier may apply to each patch: none, LayerNorm or RMSNorm.
PatchNorm = Literal["none", "layernorm", "rmsnorm"]


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
    """Non-overlapping patches, each linearly projected (the original ViT patch embedding),
    optionally normalised before and / or after the projection.

    ``pre_norm`` normalises each patch's pixels (flattened row, column, channel -- the
    ``(p1 p2 c)`` order of vit-pytorch, whose ``ViT`` and ``SimpleViT`` use LayerNorm here);
    ``norm`` normalises each projected token (vit-pytorch: LayerNorm; AIMv2: RMSNorm). Both
    together are Dual PatchNorm (Kumar et al., 2023, arXiv:2302.01327).
    """

    type: Literal["linear"] = "linear"
    patch_size: SizeOrPair = 16
    bias: bool = True
    #: Norm of each flattened patch before the projection.
    pre_norm: PatchNorm = "none"
    #: Norm of each token after the projection.
    norm: PatchNorm = "none"
    #: eps of both norms (vit-pytorch's LayerNorm and AIMv2's RMSNorm use 1e-5).
    norm_eps: PositiveFloat = 1e-5
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


def _maybe_norm(kind: str, width: int, eps: float) -> nn.Module | None:
    return None if kind == "none" else make_norm(kind, width, eps)  # type: ignore[arg-type]


class LinearPatchEmbed(Patchifier):
    """A strided convolution, which is exactly a shared linear map over flattened patches.

    With a ``pre_norm`` the patches are flattened explicitly (``(p1 p2 c)`` order), normalised
    and projected by the same convolution weight used as a matrix, so the state dict keeps
    one layout (``proj`` is a Conv2d) whichever norms are on.
    """

    def __init__(
        self,
        in_chans: int,
        dim: int,
        patch_size: tuple[int, int],
        bias: bool = True,
        *,
        pre_norm: str = "none",
        norm: str = "none",
        norm_eps: float = 1e-5,
        crop_remainder: bool = False,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.crop_remainder = crop_remainder
        self.pre_norm = _maybe_norm(pre_norm, in_chans * patch_size[0] * patch_size[1], norm_eps)
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = _maybe_norm(norm, dim, norm_eps)

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
        grid = (h // ph, w // pw)
        x = x[..., : grid[0] * ph, : grid[1] * pw]  # the remainder a strided conv leaves out
        if self.pre_norm is None:
            tokens = self.proj(x).flatten(2).transpose(1, 2)
        else:
            tokens = self._normed_projection(x, grid)
        if self.norm is not None:
            tokens = self.norm(tokens)
        return tokens, grid

    def _normed_projection(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Flatten each patch as (p1 p2 c), normalise it, project it with the conv weight."""
        b, c = x.shape[:2]
        ph, pw = self.patch_size
        patches = x.reshape(b, c, grid[0], ph, grid[1], pw).permute(0, 2, 4, 3, 5, 1)
        patches = self.pre_norm(patches.reshape(b, grid[0] * grid[1], ph * pw * c))
        weight = self.proj.weight.permute(0, 2, 3, 1).reshape(self.proj.out_channels, -1)
        return F.linear(patches, weight, self.proj.bias)


def build_linear_patch(config: LinearPatchConfig, ctx: BuildContext) -> LinearPatchEmbed:
    """Linear patch embedding (ViT), with optional norms before / after the projection."""
    return LinearPatchEmbed(
        ctx.in_chans,
        ctx.dim,
        to_pair(config.patch_size),  # type: ignore[arg-type]
        config.bias,
        pre_norm=config.pre_norm,
        norm=config.norm,
        norm_eps=config.norm_eps,
        crop_remainder=config.crop_remainder,
    )
