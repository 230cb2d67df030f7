"""Weight converter for MaxViT: timm's TensorFlow-compatible layout (``maxvit_*_tf_*``, the port
of the released google-research/maxvit weights).

Data only. One tensor needs more than a rename: the TF relative-position table is stored per
head as a (2h-1, 2w-1) grid indexed by (key - query) offsets, while vitzoo's (Swin-style) table
is ((2h-1)(2w-1), heads) indexed by (query - key): both offset axes are reversed, then heads
move last and the grid is flattened. The TF models' qkv is laid out (3, heads, head_dim) like
vitzoo's, so it is copied as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vitzoo.weights import Gather, Permute, Rename, Reshape, WeightConverter


def _reversed(dim: int) -> Gather:
    return Gather(dim, lambda shape: range(shape[dim] - 1, -1, -1))


_BLOCK = r"stages\.(\d+)\.blocks\.(\d+)\."
_TO = r"stages.\1.\2."
_CONV_PARTS = {
    "pre_norm": "pre_norm",
    "conv1_1x1": "expand.0",
    "norm1": "expand.1",
    "conv2_kxk": "depthwise.0",
    "norm2": "depthwise.1",
    "se.fc1": "se.reduce",
    "se.fc2": "se.expand",
    "conv3_1x1": "project",
    "shortcut.expand": "shortcut.1",
}
_ATTENTION = {"attn_block": "block_attention", "attn_grid": "grid_attention"}

TIMM_MAXVIT_RULES = (
    Rename(r"stem\.conv1\.(weight|bias)", r"stem.0.\1"),
    Rename(r"stem\.norm1\.(.*)", r"stem.1.\1"),
    Rename(r"stem\.conv2\.(weight|bias)", r"stem.3.\1"),
    *(
        Rename(_BLOCK + r"conv\." + re.escape(theirs) + r"\.(.*)", _TO + f"conv.{ours}." + r"\3")
        for theirs, ours in _CONV_PARTS.items()
    ),
    *(
        Rename(
            _BLOCK + rf"{theirs}\.attn\.rel_pos\.relative_position_bias_table",
            _TO + f"{ours}.attn.relative_position.relative_position_bias_table",
            ops=(_reversed(1), _reversed(2), Permute((1, 2, 0)), Reshape()),
        )
        for theirs, ours in _ATTENTION.items()
    ),
    *(
        Rename(
            _BLOCK + rf"{theirs}\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(.*)",
            _TO + rf"{ours}.\3.\4",
        )
        for theirs, ours in _ATTENTION.items()
    ),
    Rename(r"head\.norm\.(weight|bias)", r"head_norm.\1"),
    Rename(r"head\.pre_logits\.fc\.(weight|bias)", r"pre_logits.0.\1"),
    Rename(r"head\.fc\.(weight|bias)", r"head.fc.\1"),
)


def _looks_like_timm_maxvit(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "stem.conv1.weight" in tensors and any(
        k.endswith("attn_grid.attn.rel_pos.relative_position_bias_table") for k in tensors
    )


TIMM_MAXVIT = WeightConverter(
    name="timm-maxvit",
    source="timm",
    architectures=("maxvit",),
    rules=TIMM_MAXVIT_RULES,
    detect=_looks_like_timm_maxvit,
    config_names=("maxvit_",),
    summary="timm MaxxVit state dicts of the TensorFlow-ported maxvit_*_tf_* models",
    verified_by="tests/test_weights_released_functions.py",
)

CONVERTERS = (TIMM_MAXVIT,)
