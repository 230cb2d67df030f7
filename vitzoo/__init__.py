"""vitzoo: a plugin-based model zoo for Vision Transformers.

Importing ``vitzoo`` is cheap: torch and the plugins load only when something needs them.
"""

from __future__ import annotations

import warnings
from importlib import import_module
from typing import Any

from vitzoo.config import ComponentConfig, ComponentSpec, SpecValueError, component_default
from vitzoo.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "build": "vitzoo.api",
    "resolve_spec": "vitzoo.builder",
    "save": "vitzoo.checkpoint",
    "load": "vitzoo.checkpoint",
    "CheckpointError": "vitzoo.errors",
    "SpecError": "vitzoo.errors",
    "WeightsError": "vitzoo.errors",
    "get_registry": "vitzoo.plugins",
    "get_plugin_system": "vitzoo.plugins",
    "load_plugins": "vitzoo.plugins",
    "BuildContext": "vitzoo.components.context",
    "VitzooModel": "vitzoo.components.model",
    "attention_maps": "vitzoo.introspection",
    "record_attention": "vitzoo.introspection",
    "inspect_forward": "vitzoo.introspection",
    "Inspection": "vitzoo.introspection",
    "build_objective": "vitzoo.objectives",
    "ObjectiveContext": "vitzoo.objectives",
}

__all__ = [
    "ComponentConfig",
    "ComponentSpec",
    "SpecValueError",
    "__version__",
    "component_default",
    "hookimpl",
    *_LAZY,
]


#: Old public names -> (new name, why it changed); they still work, with a DeprecationWarning.
_DEPRECATED = {
    "inspect": ("inspect_forward", "it shadowed the standard library's inspect module"),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new, why = _DEPRECATED[name]
        warnings.warn(
            f"vitzoo.{name} is deprecated, use vitzoo.{new} ({why})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(import_module(_LAZY[new]), new)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vitzoo' has no attribute {name!r}")
    return getattr(import_module(module), name)
