"""Pretrained weights: converters (plugin data) and the generic machinery that applies them.

The core knows no family. A plugin registers :class:`WeightConverter` objects through the
``register_weight_converters`` hook; this package reads sources (vitzoo / timm / Hugging Face
checkpoints), applies a converter's rules with strict accounting, adapts heads, position
tables and input channels, and carries preprocessing settings along with the weights.
"""

from __future__ import annotations

from vitzoo.weights.apply import converters_for, load_state_dict, pick_converter
from vitzoo.weights.converter import Conversion, WeightConverter, apply_rules
from vitzoo.weights.errors import WeightsError
from vitzoo.weights.rules import (
    Concat,
    Gather,
    KeepInit,
    Permute,
    Rename,
    Reshape,
    Split,
    TensorOp,
    Transpose,
    Unused,
)

__all__ = [
    "Concat",
    "Conversion",
    "Gather",
    "KeepInit",
    "Permute",
    "Rename",
    "Reshape",
    "Split",
    "TensorOp",
    "Transpose",
    "Unused",
    "WeightConverter",
    "WeightsError",
    "apply_rules",
    "converters_for",
    "load_state_dict",
    "pick_converter",
]
