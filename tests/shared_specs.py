"""Spec fragments more than one test module needs (kept once, imported by name)."""

from __future__ import annotations

from typing import Any

#: CCT's convolutional tokenizer in its 3D (video) form: 4 frames x 32 px -> 2 x 8 x 8 tokens.
CONV_TOKENIZER_3D: dict[str, Any] = {
    "type": "conv-tokenizer",
    "spatial_dims": 3,
    "kernel_size": [1, 3, 3],
    "stride": [1, 2, 2],
    "padding": [0, 1, 1],
    "pool_kernel_size": [2, 3, 3],
    "pool_stride": [2, 2, 2],
    "pool_padding": [0, 1, 1],
}
