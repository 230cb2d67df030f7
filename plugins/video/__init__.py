"""Built-in plugin: video and volume transformers, one module per part.

* :mod:`.tubelet` -- the ``tubelet`` patchifier: non-overlapping (frames x height x width)
  tubelets, each linearly projected (ViViT's "tubelet embedding"); it reports a 3D grid (t, h, w).
* :mod:`.vit3d` -- ``vit3d`` / ``simple-vit-3d``: the ViT base on (B, C, T, H, W) input with a
  ``frames`` field; learned positions resample in 3D and ``sincos`` builds a 3D table, so nothing
  else changes.
* :mod:`.factorized_block` -- the ``factorized-space-time`` block: ViViT Model 3 (factorised
  self-attention): attention within each frame, then across frames at each spatial position,
  then the MLP.
* :mod:`.vivit` -- ``vivit``: ViViT (Arnab et al. 2021, arXiv:2103.15691), Model 2 (factorised
  encoder) or Model 3 (the block above), with a frame padding mask for batches of shorter videos.

This module only registers them (the entry point ``video`` names it).
"""

from __future__ import annotations

from typing import Any

from vitzoo_plugins.video.factorized_block import FactorizedBlockConfig, FactorizedSpaceTimeBlock
from vitzoo_plugins.video.tubelet import TubeletConfig, TubeletEmbed
from vitzoo_plugins.video.vit3d import SimpleVit3dConfig, Vit3dConfig
from vitzoo_plugins.video.vivit import ViViT, VivitConfig

from vitzoo import hookimpl
from vitzoo.components.vit import VisionTransformer
from vitzoo.registration_examples import GRID_ONLY_HOST

#: A tiny video host for the conformance suite: 4 frames of 32x32, tubelets 2x8x8.
TINY_VIDEO = {
    "image_size": 32,
    "frames": 4,
    "dim": 48,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "tubelet", "patch_size": 8, "frame_patch_size": 2},
}


@hookimpl
def register_patchifiers(register: Any) -> None:
    register(
        "tubelet",
        TubeletEmbed,
        TubeletConfig,
        tags={"video"},
        example={
            "config": {"patch_size": 8, "frame_patch_size": 2},
            "model": TINY_VIDEO | {"type": "vit3d"},
        },
    )


@hookimpl
def register_blocks(register: Any) -> None:
    register(
        "factorized-space-time",
        FactorizedSpaceTimeBlock,
        FactorizedBlockConfig,
        tags={"mask", "video"},
        example={"model": TINY_VIDEO | {"type": "vit3d", **GRID_ONLY_HOST}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register("vit3d", VisionTransformer, Vit3dConfig, tags={"video", "tokens"}, example=TINY_VIDEO)
    register(
        "simple-vit-3d",
        VisionTransformer,
        SimpleVit3dConfig,
        tags={"video", "tokens"},
        example=TINY_VIDEO,
    )
    tiny_vivit = {k: v for k, v in TINY_VIDEO.items() if k != "depth"}
    register(
        "vivit",
        ViViT,
        VivitConfig,
        tags={"video", "mask"},
        example=tiny_vivit | {"spatial_depth": 1, "temporal_depth": 1},
    )
