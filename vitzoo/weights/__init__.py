"""Pretrained weights: converters (plugin data) and the generic machinery that applies them.

The core knows no family. A plugin registers :class:`WeightConverter` objects through the
``register_weight_converters`` hook; this package reads sources (vitzoo / timm / Hugging Face
checkpoints), applies a converter's rules with strict accounting, adapts heads, position
tables and input channels, and carries preprocessing settings along with the weights.

Names load lazily (like :mod:`vitzoo`), so :mod:`vitzoo.spec` can import the ``weights:``
section without pulling in torch or the plugin system.
"""

from __future__ import annotations

from vitzoo.lazy import lazy_attributes

_LAZY = {
    "Concat": "vitzoo.weights.rules",
    "Gather": "vitzoo.weights.rules",
    "KeepInit": "vitzoo.weights.rules",
    "Permute": "vitzoo.weights.rules",
    "Rename": "vitzoo.weights.rules",
    "Reshape": "vitzoo.weights.rules",
    "Slice": "vitzoo.weights.rules",
    "Split": "vitzoo.weights.rules",
    "Sum": "vitzoo.weights.rules",
    "TensorOp": "vitzoo.weights.rules",
    "Transpose": "vitzoo.weights.rules",
    "Unused": "vitzoo.weights.rules",
    "Conversion": "vitzoo.weights.converter",
    "WeightConverter": "vitzoo.weights.converter",
    "apply_rules": "vitzoo.weights.converter",
    "WeightsError": "vitzoo.errors",
    "converters_for": "vitzoo.weights.selection",
    "load_state_dict": "vitzoo.weights.selection",
    "pick_converter": "vitzoo.weights.selection",
    "Preprocessing": "vitzoo.weights.preprocessing",
    "Pretrained": "vitzoo.weights.load",
    "load_pretrained": "vitzoo.weights.load",
    "convert_checkpoint": "vitzoo.weights.load",
    "read_source": "vitzoo.weights.sources",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
