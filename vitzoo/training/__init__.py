"""Training, evaluation and prediction from a spec.

The ``train:``/``data:`` spec sections are defined by the spec layer
(:mod:`vitzoo.spec.sections`; ``vitzoo.training.config`` re-exports them); everything here
imports torch and is loaded on demand.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "TrainConfig": "vitzoo.spec.sections",
    "DataConfig": "vitzoo.spec.sections",
    "train": "vitzoo.training.trainer",
    "TrainResult": "vitzoo.training.trainer",
    "evaluate": "vitzoo.training.inference",
    "predict": "vitzoo.training.inference",
    "load_classifier": "vitzoo.training.inference",
    "DataError": "vitzoo.training.data",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vitzoo.training' has no attribute {name!r}")
    return getattr(import_module(module), name)
