"""Weight converter: timm's CaiT (``timm.models.cait.Cait``) into the vitzoo ``cait`` model.

Data only. timm keeps the class-attention query, key and value as three Linears (``attn.q``,
``attn.k``, ``attn.v``); vitzoo's class-attention block has one ``qkv`` Linear, so the three
are concatenated in that order. timm's talking-heads maps (``proj_l`` before the softmax,
``proj_w`` after it) are vitzoo's ``mix_logits`` / ``mix_weights`` with the same (H, H) layout;
LayerScale ``gamma_1`` / ``gamma_2`` are ``ls1`` / ``ls2``. timm releases XS-24 only at 384 px
(``cait_xs24_384``): the catalogue lists it as a release of ``cait-xs24-384``, not of the 224-px
preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo.weights import Concat, Rename, WeightConverter

#: Sub-modules with the same name and layout in timm and vitzoo blocks.
_SAME = r"(norm1|norm2|attn\.proj|mlp\.fc1|mlp\.fc2)"


def _looks_like_timm_cait(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """timm's class-attention blocks (the default detector sees only the q of a q/k/v group)."""
    return "patch_embed.proj.weight" in tensors and "blocks_token_only.0.attn.q.weight" in tensors


TIMM_CAIT = WeightConverter(
    name="timm-cait",
    source="timm",
    architectures=("cait",),
    rules=(
        Rename(r"patch_embed\.proj\.(weight|bias)", r"patch.proj.\1"),
        Rename(r"cls_token", r"cls_token"),
        Rename(r"pos_embed", r"posenc.pos_embed"),
        Rename(rf"blocks\.(\d+)\.{_SAME}\.(weight|bias)", r"blocks.\1.\2.\3"),
        Rename(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"blocks.\1.attn.qkv.\2"),
        Rename(r"blocks\.(\d+)\.attn\.proj_l\.(weight|bias)", r"blocks.\1.attn.mix_logits.\2"),
        Rename(r"blocks\.(\d+)\.attn\.proj_w\.(weight|bias)", r"blocks.\1.attn.mix_weights.\2"),
        Rename(r"blocks\.(\d+)\.gamma_(1|2)", r"blocks.\1.ls\2.gamma"),
        Concat(
            (
                r"blocks_token_only\.(\d+)\.attn\.q\.(weight|bias)",
                r"blocks_token_only.\1.attn.k.\2",
                r"blocks_token_only.\1.attn.v.\2",
            ),
            r"class_blocks.\1.attn.qkv.\2",
        ),
        Rename(rf"blocks_token_only\.(\d+)\.{_SAME}\.(weight|bias)", r"class_blocks.\1.\2.\3"),
        Rename(r"blocks_token_only\.(\d+)\.gamma_(1|2)", r"class_blocks.\1.ls\2.gamma"),
        Rename(r"norm\.(weight|bias)", r"norm.\1"),
        Rename(r"head\.(weight|bias)", r"head.fc.\1"),
    ),
    detect=_looks_like_timm_cait,
    config_names=("cait_",),
    summary="timm Cait state dicts (talking heads, LayerScale, class attention)",
    verified_by="tests/test_weights_timm.py",
)

CONVERTERS = (TIMM_CAIT,)
