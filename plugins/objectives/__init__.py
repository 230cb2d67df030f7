"""Built-in plugin `objectives`: DeiT distillation, MAE, SimMIM, MPP, MP3, DINO, EsViT.

One module per family: :mod:`.distillation` (a frozen teacher on top of the core's
``supervised`` objective, which the core registers itself), :mod:`.masked_image` (MAE, SimMIM,
MPP, MP3) and :mod:`.self_distillation` (DINO, EsViT). Every objective talks to the model only
through the public protocol, which is why they work on every registered backbone with the needed
capability instead of one ViT class; the contract is described in :mod:`vitzoo.objectives`.
"""

from __future__ import annotations

from typing import Any

from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.objectives.distillation import DistillationConfig, build_distillation
from vitzoo_plugins.objectives.masked_image import (
    MaeConfig,
    MaeObjective,
    Mp3Config,
    Mp3Objective,
    MppConfig,
    MppObjective,
    SimMimConfig,
    SimMimObjective,
)
from vitzoo_plugins.objectives.self_distillation import (
    DinoConfig,
    DinoObjective,
    EsVitConfig,
    EsVitObjective,
)

from vitzoo import hookimpl
from vitzoo.registration_examples import TINY_VIT

#: Per-patch objectives need a single-image token model on a fixed patch grid.
TOKEN_MODEL_NEEDS = {"image", "tokens", "fixed-grid"}
SPATIAL_MODEL_NEEDS = {"image", "spatial-features"}
MASKED_IMAGE_TAGS = {"self-supervised", "masked-image"}

#: A one-block tiny ViT teacher, so the distillation example builds in milliseconds.
TINY_TEACHER = {"spec": {"model": {"type": "vit", **TINY_VIT, "depth": 1}}}

#: A CPU-sized projection head for the conformance examples (the paper's is ~22M parameters).
SSL_HEAD = {"config": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "local_crops": 2}}


def paper_head_summary(method: str) -> str:
    """DINO and EsViT default to the paper's head size; their summaries say how to shrink it."""
    return (
        f"{method}; paper-size head by default (out_dim 65536, hidden 2048: ~22M parameters, "
        "twice with the EMA teacher): set out_dim/hidden_dim/bottleneck_dim small for a small model"
    )


@hookimpl
def register_objectives(register: Any) -> None:
    register(
        "distillation",
        build_distillation,
        DistillationConfig,
        tags={"supervised", "teacher"},
        example={"config": {"teacher": TINY_TEACHER}},
    )
    register(
        "mae",
        MaeObjective,
        MaeConfig,
        tags=MASKED_IMAGE_TAGS,
        needs=TOKEN_MODEL_NEEDS,
        # its encoder sees a subset of the patch tokens: parts that need all of them cannot
        offers={"drops-tokens"},
        example={"config": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}},
    )
    register(
        "simmim", SimMimObjective, SimMimConfig, tags=MASKED_IMAGE_TAGS, needs=TOKEN_MODEL_NEEDS
    )
    register("mpp", MppObjective, MppConfig, tags=MASKED_IMAGE_TAGS, needs=TOKEN_MODEL_NEEDS)
    register(
        "mp3",
        Mp3Objective,
        Mp3Config,
        tags={"self-supervised", "needs-mask"},
        needs=TOKEN_MODEL_NEEDS,
    )
    for name, cls, config, method, needs in (
        ("dino", DinoObjective, DinoConfig, "DINO (Caron et al. 2021)", {"image"}),
        # region-level matching needs one feature per patch or map location
        ("esvit", EsVitObjective, EsVitConfig, "EsViT (Li et al. 2022)", SPATIAL_MODEL_NEEDS),
    ):
        register(
            name,
            cls,
            config,
            tags={"self-supervised", "ema"},
            needs=needs,
            summary=paper_head_summary(method),
            example=SSL_HEAD,
        )


@hookimpl
def register_presets(register: Any) -> None:
    """Objective presets: a model and the paper's pre-training objective (MAE's decoder)."""
    register_catalogue_presets(register, "objectives")
