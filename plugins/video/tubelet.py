"""The tubelet patchifier: non-overlapping (frames x height x width) tubelets, each linearly
projected (ViViT's "tubelet embedding"); it reports a 3D grid (t, h, w).

Every video model here tiles its input with it, so the rule "a video model needs a 3D
patchifier" (:func:`check_video_patch`) lives beside it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import nn

from vitzoo import ComponentConfig, SpecValueError
from vitzoo.components.context import BuildContext
from vitzoo.components.layers import to_pair
from vitzoo.components.patchify import Patchifier, check_divisible
from vitzoo.config import PositiveInt, SizeOrPair


class TubeletConfig(ComponentConfig):
    """Non-overlapping tubelets of ``frame_patch_size`` frames x ``patch_size`` pixels."""

    type: Literal["tubelet"] = "tubelet"
    patch_size: SizeOrPair = 16
    frame_patch_size: PositiveInt = 2
    bias: bool = True
    #: Input extent it tiles: (T, H, W).
    spatial_dims: ClassVar[int] = 3

    def tubelet(self) -> tuple[int, int, int]:
        return (self.frame_patch_size, *to_pair(self.patch_size))  # type: ignore[return-value]

    def check(self, image_size: Any = None, **_: Any) -> None:
        if self.frame_patch_size < 1:
            raise SpecValueError("frame_patch_size", "must be >= 1")
        if image_size is None:
            return
        if len(image_size) != 3:
            raise SpecValueError(
                "type",
                "the tubelet patchifier needs video input (C, T, H, W); use it in a video model "
                "(allowed: vit3d, simple-vit-3d, vivit)",
            )
        frames, *hw = image_size
        if frames % self.frame_patch_size:
            allowed = [d for d in range(1, frames + 1) if frames % d == 0]
            raise SpecValueError(
                "frame_patch_size",
                f"frame patch size {self.frame_patch_size} does not divide frames={frames}; "
                f"allowed: {allowed}",
            )
        check_divisible(tuple(hw), self.patch_size)


class TubeletEmbed(Patchifier):
    """Tubelet embedding for video / volumes.

    A Conv3d with stride = kernel: one linear map shared by all flattened tubelets.
    """

    spatial_dims = 3

    def __init__(self, config: TubeletConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.tubelet = config.tubelet()
        self.proj = nn.Conv3d(
            ctx.in_chans, ctx.dim, kernel_size=self.tubelet, stride=self.tubelet, bias=config.bias
        )

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // p for s, p in zip(image_size, self.tubelet, strict=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 5:
            raise ValueError(
                f"tubelet patchifier expects video (B, C, T, H, W), got shape {tuple(x.shape)}"
            )
        if any(s % p for s, p in zip(x.shape[2:], self.tubelet, strict=True)):
            raise ValueError(
                f"video size {tuple(x.shape[2:])} is not divisible by tubelet {self.tubelet}"
            )
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


def check_video_patch(patch: Any) -> None:
    """Spec-time rule of video models: the patchifier must tile (T, H, W), not images."""
    if getattr(patch, "spatial_dims", 2) != 3:
        raise SpecValueError(
            "patch.type",
            f"{patch.type!r} tiles images; a video model needs a 3D patchifier (allowed: tubelet)",
        )
