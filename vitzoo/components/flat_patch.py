"""The ``flat-linear`` patchifier: each patch's pixels flattened, optionally normalised, then
projected by a ``Linear`` layer -- the patch embedding of native-resolution ViTs.

Mathematically a strided convolution (the ``linear`` patchifier), but laid out the way NaViT and
SigLIP 2's NaFlex models hold it: a ``(dim, patch_pixels)`` matrix over pre-patchified pixels,
in one of two pixel orders --

* ``hwc``: row, column, channel -- ``(p1 p2 c)``, channel fastest (SigLIP 2 NaFlex in timm's
  ``naflexvit`` and Hugging Face's ``Siglip2VisionModel``, whose processors hand the model
  patches in this order);
* ``chw``: channel, row, column -- ``(c p1 p2)`` (vit-pytorch's NaViT; also a conv weight
  flattened).

``pre_norm`` normalises each flattened patch before the projection and ``norm`` each token after
it (vit-pytorch's NaViT: LayerNorm -> Linear -> LayerNorm, both without a bias).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.layers import to_pair
from vitzoo.components.norms import OptionalNorm, make_optional_norm
from vitzoo.components.patchify import Patchifier, check_divisible
from vitzoo.config import ComponentConfig, PositiveFloat, SizeOrPair

#: The order of a flattened patch's pixels.
PixelOrder = Literal["hwc", "chw"]


def patchify(images: torch.Tensor, patch: tuple[int, int], order: str = "hwc") -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/p1)(W/p2), p1 * p2 * C)`` flattened patches, row-major over
    the patch grid, each patch's pixels in ``order`` (``hwc`` or ``chw``)."""
    b, c, h, w = images.shape
    ph, pw = patch
    cells = images.reshape(b, c, h // ph, ph, w // pw, pw)
    if order == "hwc":
        cells = cells.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p1, p2, C)
    else:
        cells = cells.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p1, p2)
    return cells.reshape(b, (h // ph) * (w // pw), c * ph * pw)


class FlatLinearPatchConfig(ComponentConfig):
    """Flattened patches -> (norm) -> Linear -> (norm): NaViT's / SigLIP 2 NaFlex's patch embedding."""

    type: Literal["flat-linear"] = "flat-linear"
    patch_size: SizeOrPair = 16
    bias: bool = True
    #: Pixel order of a flattened patch: ``hwc`` (SigLIP 2 NaFlex) or ``chw`` (vit-pytorch).
    order: PixelOrder = "hwc"
    #: Norm of each flattened patch before the projection.
    pre_norm: OptionalNorm = "none"
    #: Norm of each token after the projection.
    norm: OptionalNorm = "none"
    #: eps of both norms (vit-pytorch's LayerNorm: 1e-5).
    norm_eps: PositiveFloat = 1e-5

    def check(self, image_size: Any = None, **_: Any) -> None:
        if image_size is not None:
            check_divisible(image_size, self.patch_size)

    def token_grid(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        patch = to_pair(self.patch_size, len(image_size))
        return tuple(s // p for s, p in zip(image_size, patch, strict=True))


class FlatLinearPatchEmbed(Patchifier):
    """Image (B, C, H, W) -> flattened patches -> (norm) -> Linear -> (norm) -> tokens, grid."""

    def __init__(self, in_chans: int, dim: int, config: FlatLinearPatchConfig) -> None:
        super().__init__()
        self.patch_size: tuple[int, int] = to_pair(config.patch_size)  # type: ignore[assignment]
        self.order = config.order
        pixels = in_chans * self.patch_size[0] * self.patch_size[1]
        self.pre_norm = make_optional_norm(config.pre_norm, pixels, config.norm_eps)
        self.proj = nn.Linear(pixels, dim, bias=config.bias)
        self.norm = make_optional_norm(config.norm, dim, config.norm_eps)

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // p for s, p in zip(image_size, self.patch_size, strict=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 4:
            raise ValueError(
                f"flat-linear patchifier expects images (B, C, H, W), got shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        ph, pw = self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"image size {(h, w)} is not divisible by patch size {(ph, pw)}")
        patches = patchify(x, self.patch_size, self.order)
        return self.norm(self.proj(self.pre_norm(patches))), (h // ph, w // pw)


def build_flat_linear_patch(
    config: FlatLinearPatchConfig, ctx: BuildContext
) -> FlatLinearPatchEmbed:
    """Flattened-patch linear embedding with optional norms (NaViT, SigLIP 2 NaFlex)."""
    return FlatLinearPatchEmbed(ctx.in_chans, ctx.dim, config)
