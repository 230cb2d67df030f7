"""Training, evaluation and prediction from a spec.

The ``train:``/``data:`` spec sections are defined by the spec layer
(:mod:`vitzoo.spec.sections`; ``vitzoo.training`` names them too); everything here
imports torch and is loaded on demand.
"""

from __future__ import annotations

from vitzoo.lazy import lazy_attributes

_LAZY = {
    "TrainConfig": "vitzoo.spec.sections",
    "DataConfig": "vitzoo.spec.sections",
    "train": "vitzoo.training.trainer",
    "TrainResult": "vitzoo.training.trainer",
    "evaluate": "vitzoo.training.inference",
    "predict": "vitzoo.training.inference",
    "load_classifier": "vitzoo.training.inference",
    "DataError": "vitzoo.errors",
}

__all__ = list(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
