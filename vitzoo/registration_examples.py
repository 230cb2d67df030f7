"""Registration ``example=`` building blocks shared by the built-in plugins (plain data).

An ``example=`` is part of a registration (like its tags): the small overrides that make a
CPU-cheap instance of the registered part. It lives beside the registry rather than in the
component library, which it does not describe, or in the test suite, which only reads it.

The conformance suite builds every registered thing from its example (see
:mod:`vitzoo.testing.variants`). Several families register the same tiny flat ViT as their
architecture example, and every grid-only component (window-style attentions that partition the
patch grid) needs the same host without prefix tokens; both live here once.
"""

from __future__ import annotations

from typing import Any

#: Overrides of a flat-ViT config giving a CPU-cheap model (32 px, patch 8, width 32, 2 blocks).
TINY_VIT: dict[str, Any] = {
    "image_size": 32,
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "linear", "patch_size": 8},
}

#: Host-model overrides for components that only work on the patch grid: no class token, so the
#: host pools by averaging.
GRID_ONLY_HOST: dict[str, Any] = {"class_token": False, "pool": {"type": "mean"}}


def grid_only_example(**config: Any) -> dict[str, Any]:
    """A component ``example`` with ``config`` overrides, hosted without prefix tokens."""
    return {"config": config, "model": dict(GRID_ONLY_HOST)}
