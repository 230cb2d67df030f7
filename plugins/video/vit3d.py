"""The 3D ViT: the ViT base on (B, C, T, H, W) input with a ``frames`` field.

``vit3d`` / ``simple-vit-3d`` are configs only: learned positions resample in 3D and ``sincos``
builds a 3D table, so the ViT base runs them unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator
from vitzoo_plugins.video.tubelet import check_video_patch

from vitzoo import ComponentSpec, SpecValueError, component_default
from vitzoo.components.layers import to_pair
from vitzoo.components.vit import VitConfig
from vitzoo.config import PositiveInt, SizeOrPair


class Vit3dConfig(VitConfig):
    """ViT on video / volumes (B, C, T, H, W): tubelets, 3D learned positions, class token."""

    type: Literal["vit3d"] = "vit3d"
    image_size: SizeOrPair = 128
    frames: PositiveInt = 16
    patch: ComponentSpec("patchifier") = component_default(
        type="tubelet", patch_size=16, frame_patch_size=2
    )

    def input_extent(self) -> tuple[int, ...]:
        return (self.frames, *to_pair(self.image_size))

    @model_validator(mode="after")
    def _video_rules(self) -> Vit3dConfig:
        if self.frames < 1:
            raise SpecValueError("frames", f"must be >= 1, got {self.frames}")
        check_video_patch(self.patch)
        return self


class SimpleVit3dConfig(Vit3dConfig):
    """SimpleViT on video: tubelets, fixed 3D sin-cos positions, mean pooling, no class token."""

    type: Literal["simple-vit-3d"] = "simple-vit-3d"
    #: vit-pytorch's ``posemb_sincos_3d`` table: [x, y, t] blocks, frequencies i / (d/6 - 1).
    posenc: ComponentSpec("posenc") = component_default(
        type="sincos", reverse_axes=True, endpoint=True
    )
    pool: ComponentSpec("pooling") = component_default(type="mean")
    class_token: bool = False
