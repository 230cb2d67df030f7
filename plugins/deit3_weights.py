"""Weight converters for DeiT III (``deit3``): timm's ``deit3_*`` and the official release.

Data only. timm's layout is the ViT base's (its rules are reused). The official checkpoints
(facebookresearch/deit ``models_v2.py``: ``deit_3_small_224_1k.pth`` ..., the state dict under
``"model"``) differ only in the LayerScale names, ``blocks.N.gamma_1`` / ``gamma_2``
(vitzoo's ``ls1.gamma`` / ``ls2.gamma``); the class token has no table row in either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo_plugins._vit_rules import TIMM_VIT_RULES

from vitzoo.weights import Rename, WeightConverter

TEST = "tests/test_weights_deit3.py"


def _patch_only_table(tensors: Mapping[str, Any]) -> bool:
    """A square patch table without a class row and no registers (DeiT III, not DINOv2)."""
    table = tensors.get("pos_embed")
    if table is None or table.ndim != 3 or "reg_token" in tensors:
        return False
    rows = int(table.shape[1])
    return round(rows**0.5) ** 2 == rows


TIMM_DEIT3 = WeightConverter(
    name="timm-deit3",
    source="timm",
    architectures=("deit3",),
    rules=TIMM_VIT_RULES,
    detect=lambda tensors, config: (
        "blocks.0.ls1.gamma" in tensors and "cls_token" in tensors and _patch_only_table(tensors)
    ),
    summary="timm deit3_* state dicts (LayerScale, positions without the class token)",
    verified_by=TEST,
)

OFFICIAL_DEIT3 = WeightConverter(
    name="official-deit3",
    source="official",
    architectures=("deit3",),
    rules=(Rename(r"blocks\.(\d+)\.gamma_(1|2)", r"blocks.\1.ls\2.gamma"), *TIMM_VIT_RULES),
    detect=lambda tensors, config: (
        "blocks.0.gamma_1" in tensors
        and "patch_embed.proj.weight" in tensors
        and not any(k.startswith("blocks_token_only.") for k in tensors)  # CaiT's are gamma_1 too
    ),
    summary="facebookresearch/deit models_v2 (deit_3_*) checkpoints: gamma_1/2 are LayerScale",
    verified_by=TEST,
)

CONVERTERS = (TIMM_DEIT3, OFFICIAL_DEIT3)
