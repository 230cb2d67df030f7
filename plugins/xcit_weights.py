"""Weight converters for XCiT: timm's layout and the official facebookresearch/xcit layout.

Data only. The two layouts differ in two places, which is all the official converter changes:
the official checkpoints call the positions ``pos_embeder`` and keep the class-attention
q, k, v in one fused ``qkv`` (timm splits it into ``q``, ``k``, ``v``; vitzoo keeps it fused).
The 1x1 position conv becomes vitzoo's linear projection by a reshape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo.weights import Concat, Rename, Reshape, WeightConverter

#: timm / official stem layers sit at even indices (a GELU between each): proj.{2i} -> proj.{i}.
_MAX_STEM_LAYERS = 8
_STEM_RULES = tuple(
    Rename(rf"patch_embed\.proj\.{2 * i}\.([01])\.(.*)", rf"patch.proj.{i}.\1.\2")
    for i in range(_MAX_STEM_LAYERS)
)
_SHARED_RULES = (
    *_STEM_RULES,
    Rename(r"cls_token", r"cls_token"),
    Rename(r"blocks\.(\d+)\.local_mp\.(.*)", r"blocks.\1.local.\2"),
    Rename(r"blocks\.(\d+)\.gamma([123])", r"blocks.\1.ls\2.gamma"),
    Rename(r"blocks\.(\d+)\.attn\.temperature", r"blocks.\1.attn.temperature"),
    Rename(
        r"blocks\.(\d+)\.(norm[123]|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
        r"blocks.\1.\2.\3",
    ),
    Rename(r"cls_attn_blocks\.(\d+)\.gamma([12])", r"class_blocks.\1.ls\2.gamma"),
    Rename(
        r"cls_attn_blocks\.(\d+)\.(norm[12]|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
        r"class_blocks.\1.\2.\3",
    ),
    Rename(r"norm\.(weight|bias)", r"norm.\1"),
    Rename(r"head\.(weight|bias)", r"head.fc.\1"),
)


def _positions(prefix: str) -> tuple[Rename, ...]:
    return (
        Rename(rf"{prefix}\.token_projection\.weight", r"posenc.proj.weight", ops=(Reshape(),)),
        Rename(rf"{prefix}\.token_projection\.bias", r"posenc.proj.bias"),
    )


TIMM_XCIT_RULES = (
    *_SHARED_RULES,
    *_positions("pos_embed"),
    Concat(
        (
            r"cls_attn_blocks\.(\d+)\.attn\.q\.(weight|bias)",
            r"cls_attn_blocks.\1.attn.k.\2",
            r"cls_attn_blocks.\1.attn.v.\2",
        ),
        r"class_blocks.\1.attn.qkv.\2",
    ),
)

OFFICIAL_XCIT_RULES = (
    *_SHARED_RULES,
    *_positions("pos_embeder"),
    Rename(r"cls_attn_blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"class_blocks.\1.attn.qkv.\2"),
)


def _looks_like_timm_xcit(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "blocks.0.local_mp.conv1.weight" in tensors and "cls_attn_blocks.0.attn.q.weight" in (
        tensors
    )


def _looks_like_official_xcit(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "blocks.0.local_mp.conv1.weight" in tensors and (
        "cls_attn_blocks.0.attn.qkv.weight" in tensors
    )


TIMM_XCIT = WeightConverter(
    name="timm-xcit",
    source="timm",
    architectures=("xcit",),
    rules=TIMM_XCIT_RULES,
    detect=_looks_like_timm_xcit,
    config_names=("xcit_",),
    summary="timm Xcit state dicts (class-attention q, k, v split)",
    verified_by="tests/test_weights_released_functions.py",
)

OFFICIAL_XCIT = WeightConverter(
    name="official-xcit",
    source="official",
    architectures=("xcit",),
    rules=OFFICIAL_XCIT_RULES,
    detect=_looks_like_official_xcit,
    summary="facebookresearch/xcit checkpoints (pos_embeder, fused class-attention qkv)",
    verified_by="tests/test_weights_released_functions.py",
)

CONVERTERS = (TIMM_XCIT, OFFICIAL_XCIT)
