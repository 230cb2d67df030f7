"""Weight converter: timm's ``Eva`` (the EVA-02 ports, ``eva02_*_patch14_*``) into ``eva02``.

Data only. timm builds two layouts of the same function and the released checkpoints use both:

* Ti / S (``qkv_fused=True``, SwiGLU without sub-LN): one ``attn.qkv`` weight plus ``q_bias`` /
  ``v_bias`` (the key bias is a zero buffer, not saved), and one packed ``mlp.fc1`` (gate
  rows first) -- vitzoo's own layout, renamed as it is;
* B / L (``qkv_fused=False``, SwiGLU with sub-LN): ``attn.q_proj`` / ``k_proj`` / ``v_proj``
  (the key without a bias) and ``mlp.fc1_g`` / ``mlp.fc1_x``: the weights are concatenated
  into ``qkv`` (q, k, v) and ``fc1`` (gate, then linear), the q / v biases become ``q_bias`` /
  ``v_bias``.

The RoPE tables are derived buffers (not saved by timm). A fine-tune's post-pool norm is
``fc_norm``; a model pooling by class token has a final ``norm`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo.weights import Concat, Rename, WeightConverter

_BLOCK = r"blocks\.(\d+)\."

TIMM_EVA_RULES = (
    Rename(r"patch_embed\.proj\.(weight|bias)", r"patch.proj.\1"),
    Rename(r"cls_token", r"cls_token"),
    Rename(r"pos_embed", r"posenc.pos_embed"),
    Rename(
        _BLOCK + r"(norm1|norm2|attn\.proj|mlp\.fc1|mlp\.norm|mlp\.fc2)\.(weight|bias)",
        r"blocks.\1.\2.\3",
    ),
    # fused attention (Ti, S)
    Rename(_BLOCK + r"attn\.qkv\.weight", r"blocks.\1.attn.qkv.weight"),
    Rename(_BLOCK + r"attn\.(q_bias|v_bias)", r"blocks.\1.attn.\2"),
    # separate q, k, v (B, L)
    Concat(
        (
            _BLOCK + r"attn\.q_proj\.weight",
            r"blocks.\1.attn.k_proj.weight",
            r"blocks.\1.attn.v_proj.weight",
        ),
        r"blocks.\1.attn.qkv.weight",
    ),
    Rename(_BLOCK + r"attn\.(q|v)_proj\.bias", r"blocks.\1.attn.\2_bias"),
    # SwiGLU halves kept apart (B, L): gate first, as vitzoo's fc1 chunks them
    Concat(
        (_BLOCK + r"mlp\.fc1_g\.(weight|bias)", r"blocks.\1.mlp.fc1_x.\2"),
        r"blocks.\1.mlp.fc1.\2",
    ),
    Rename(r"(norm|fc_norm)\.(weight|bias)", r"\1.\2"),
    Rename(r"head\.(weight|bias)", r"head.fc.\1"),
)


def _looks_like_timm_eva(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """q / v biases (fused) or a separate q projection, and no relative-position table (BEiT)."""
    if "patch_embed.proj.weight" not in tensors:
        return False
    eva_attention = "blocks.0.attn.q_bias" in tensors or "blocks.0.attn.q_proj.weight" in tensors
    return eva_attention and not any("relative_position" in k for k in tensors)


TIMM_EVA = WeightConverter(
    name="timm-eva02",
    source="timm",
    architectures=("eva02",),
    rules=TIMM_EVA_RULES,
    detect=_looks_like_timm_eva,
    config_names=("eva02_",),
    summary="timm Eva state dicts of the EVA-02 models (fused and separate q/k/v, SwiGLU)",
    verified_by="tests/test_eva.py",
)

CONVERTERS = (TIMM_EVA,)
