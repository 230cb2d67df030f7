"""The ``train:`` and ``data:`` spec sections, under the name users have imported them by.

They are defined in :mod:`vitzoo.spec.sections` (the spec owns its sections, so validating a
spec never imports the trainer); this module only re-exports them.
"""

from __future__ import annotations

from vitzoo.spec.sections import IMAGENET_MEAN, IMAGENET_STD, DataConfig, TrainConfig

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DataConfig", "TrainConfig"]
