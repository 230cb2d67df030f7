"""Weight converter for CrossViT: timm's layout (the official IBM/CrossViT code's key names).

Data only. The fusion's class attention keeps separate ``wq``, ``wk``, ``wv`` projections in the
references; vitzoo's shared class attention has one fused ``qkv``, so they are concatenated.
Released models use one cross-attention layer per fusion (``depth[-1] == 0`` in their configs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo.weights import Concat, Rename, WeightConverter

_FUSION = r"blocks\.(\d+)\.fusion\.(\d+)\."

TIMM_CROSSVIT_RULES = (
    Rename(r"patch_embed\.(\d)\.proj\.(weight|bias)", r"patches.\1.proj.\2"),
    # the dagger models' three-conv patch embedding (Conv, ReLU, Conv, ReLU, Conv)
    Rename(r"patch_embed\.(\d)\.proj\.([024])\.(weight|bias)", r"patches.\1.proj.\2.\3"),
    Rename(r"cls_token_(\d)", r"cls_tokens.\1"),
    Rename(r"pos_embed_(\d)", r"posencs.\1.pos_embed"),
    Rename(r"blocks\.(\d+)\.blocks\.(\d)\.(\d+)\.(.*)", r"stages.\1.branches.\2.\3.\4"),
    Rename(r"blocks\.(\d+)\.projs\.(\d)\.([02])\.(.*)", r"stages.\1.fusions.\2.project.\3.\4"),
    Rename(
        r"blocks\.(\d+)\.revert_projs\.(\d)\.([02])\.(.*)", r"stages.\1.fusions.\2.revert.\3.\4"
    ),
    Rename(_FUSION + r"norm1\.(weight|bias)", r"stages.\1.fusions.\2.norms.0.\3"),
    Concat(
        (
            _FUSION + r"attn\.wq\.(weight|bias)",
            r"blocks.\1.fusion.\2.attn.wk.\3",
            r"blocks.\1.fusion.\2.attn.wv.\3",
        ),
        r"stages.\1.fusions.\2.attns.0.qkv.\3",
    ),
    Rename(_FUSION + r"attn\.proj\.(weight|bias)", r"stages.\1.fusions.\2.attns.0.proj.\3"),
    Rename(r"norm\.(\d)\.(weight|bias)", r"norms.\1.\2"),
    Rename(r"head\.(\d)\.(weight|bias)", r"heads.\1.fc.\2"),
)


def _looks_like_timm_crossvit(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "pos_embed_1" in tensors and "blocks.0.fusion.0.attn.wq.weight" in tensors


TIMM_CROSSVIT = WeightConverter(
    name="timm-crossvit",
    source="timm",
    architectures=("crossvit",),
    rules=TIMM_CROSSVIT_RULES,
    detect=_looks_like_timm_crossvit,
    config_names=("crossvit_",),
    summary="timm CrossVit state dicts (single-conv and the dagger models' three-conv patches)",
    verified_by="tests/test_weights_released_functions.py",
)

CONVERTERS = (TIMM_CROSSVIT,)
