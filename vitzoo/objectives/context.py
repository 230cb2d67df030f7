"""What an objective factory is told: the model it trains and what the caller supplied.

Objectives wrap a model that is already built, so they get that model and the run's inputs
(class weights, a ready teacher) as named fields instead of the component
:class:`~vitzoo.components.context.BuildContext`, whose fields describe a model being built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vitzoo.components.context import BuildContext

if TYPE_CHECKING:
    from vitzoo.plugins import PluginSystem
    from vitzoo.registry import Registry


@dataclass(frozen=True, eq=False)
class ObjectiveContext:
    """Passed to every objective ``factory(config, octx)`` by :func:`vitzoo.build_objective`.

    ``model``: the built model being trained. ``system``: the plugin system it was built with
    (to build teachers and registered components). ``class_weights``: one weight per class, or
    ``None`` (``vitzoo train`` passes them for ``train.class_weights: balanced``). ``teacher``:
    a ready teacher module the caller supplies instead of the one the config describes.
    """

    model: nn.Module
    system: PluginSystem
    class_weights: torch.Tensor | None = None
    teacher: nn.Module | None = None

    @property
    def registry(self) -> Registry:
        return self.system.registry

    def component_context(self, **facts: Any) -> BuildContext:
        """A component context for heads an objective builds from registered components
        (MAE's decoder blocks); ``facts`` are the :class:`BuildContext` fields to set."""
        return BuildContext(registry=self.registry, **facts)
