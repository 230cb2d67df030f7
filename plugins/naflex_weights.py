"""Weight converters for the SigLIP 2 NaFlex towers: timm's ``NaFlexVit`` and Hugging Face's
``Siglip2VisionModel`` (also ``Siglip2Model``'s vision tower, ``Siglip2ForImageClassification``).

Data only. Both hold the patch embedding as a ``Linear`` over (row, column, channel)-flattened
patches -- vitzoo's ``flat-linear`` with ``order: hwc`` holds it the same way -- and a learned
16 x 16 position table (timm: ``(1, 16, 16, D)``; HF: an ``Embedding`` of 256 rows), row-major,
which vitzoo keeps as its ``(1, 256, D)`` learned table. The blocks, final norm and MAP head
are SigLIP's: timm's ViT names (the vit family's rules) and HF's Siglip encoder and head (the
clip plugin's rules), unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from vitzoo_plugins._vit_rules import TIMM_VIT_RULES
from vitzoo_plugins.clip_weights import HF_SIGLIP_RULES, SIGLIP_VISION_DEFAULTS, _trunk

from vitzoo.errors import WeightsError
from vitzoo.weights import Rename, Reshape, WeightConverter
from vitzoo.weights.hf_config import hf_class_names

TIMM_NAFLEX_RULES = (
    Rename(r"embeds\.proj\.(weight|bias)", r"patch.proj.\1"),
    Rename(r"embeds\.pos_embed", "posenc.pos_embed", ops=(Reshape(),)),
    Rename(r"embeds\.(cls_token|reg_token)", r"\1"),
    *TIMM_VIT_RULES,
)


def _looks_like_timm_naflex(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "embeds.proj.weight" in tensors and "blocks.0.attn.qkv.weight" in tensors


TIMM_NAFLEX = WeightConverter(
    name="timm-naflex",
    source="timm",
    architectures=("siglip2-naflex",),
    rules=TIMM_NAFLEX_RULES,
    detect=_looks_like_timm_naflex,
    config_names=("naflexvit_",),
    summary="timm naflexvit_*_siglip (NaFlexVit: linear patch embedding, per-image positions)",
    verified_by="tests/test_naflex.py",
)

#: transformers' Siglip2VisionConfig defaults, for fields a config.json leaves out.
SIGLIP2_VISION_DEFAULTS = {
    **{k: v for k, v in SIGLIP_VISION_DEFAULTS.items() if k != "image_size"},
    "num_patches": 256,
}

SIGLIP2_ARCHITECTURES = (
    "Siglip2Model",
    "Siglip2VisionModel",
    "Siglip2ForImageClassification",
)


def spec_from_hf_siglip2(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF Siglip2Config / Siglip2VisionConfig -> a vitzoo ``siglip2-naflex`` spec: the MAP
    head's output is the embedding; Siglip2ForImageClassification classifies the masked mean of
    the tokens (its MAP head is carried but unused). ``num_patches`` (a square table) gives the
    spec's ``image_size``."""
    arch = str((config.get("architectures") or [SIGLIP2_ARCHITECTURES[0]])[0])
    if arch not in SIGLIP2_ARCHITECTURES:
        raise WeightsError(
            f"config.json: {arch} has no image tower vitzoo builds as 'siglip2-naflex'; "
            f"supported: {', '.join(SIGLIP2_ARCHITECTURES)}"
        )
    nested = config.get("vision_config")
    vision = {**SIGLIP2_VISION_DEFAULTS, **(nested if isinstance(nested, Mapping) else config)}
    side = math.isqrt(int(vision["num_patches"]))
    if side * side != int(vision["num_patches"]):
        raise WeightsError(f"config.json: num_patches={vision['num_patches']} is not a square")
    vision["image_size"] = side * int(vision["patch_size"])
    model = _trunk(vision, "siglip2-naflex")
    model["patch"] = {"type": "flat-linear", "patch_size": vision["patch_size"], "order": "hwc"}
    model |= {"class_token": False, "num_classes": 0}
    if arch == "Siglip2ForImageClassification" or not vision["vision_use_head"]:
        model["pool"] = {"type": "mean"}
    else:
        model["pool"] = {"type": "map", "norm_eps": model["norm_eps"]}
    if arch == "Siglip2ForImageClassification":
        labels = hf_class_names(config)
        model["num_classes"] = len(labels) if labels else int(config.get("num_labels", 2))
    return {"model": model}


HF_SIGLIP2 = WeightConverter(
    name="hf-siglip2",
    source="hf",
    architectures=("siglip2-naflex",),
    rules=HF_SIGLIP_RULES,
    spec_from_config=spec_from_hf_siglip2,
    config_names=("siglip2", "siglip2_vision_model"),
    summary="transformers Siglip2VisionModel / Siglip2Model / Siglip2ForImageClassification",
    verified_by="tests/test_naflex.py",
)

CONVERTERS = (TIMM_NAFLEX, HF_SIGLIP2)
