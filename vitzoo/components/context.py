"""What a component factory is told about the model it is being built into."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from vitzoo.registry import Registry


@dataclass(frozen=True)
class BuildContext:
    """Facts from the enclosing architecture, passed to every ``factory(config, ctx)``.

    Factories read only what they need; architectures fill in what they know. ``build`` lets a
    composite component (a block, a hierarchical stage) build its registered sub-components.
    """

    registry: Registry
    dim: int = 0
    num_heads: int = 1
    in_chans: int = 3
    image_size: tuple[int, ...] = ()
    grid: tuple[int, ...] = ()
    num_prefix_tokens: int = 0
    num_classes: int = 0
    num_features: int = 0
    layer_index: int = 0
    depth: int = 1
    drop_path: float = 0.0
    #: Specs a block builds its token mixer and channel mixer from.
    attention: Any = None
    mlp: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> BuildContext:
        return dataclasses.replace(self, **changes)

    def build(self, kind: str, spec: Any, **changes: Any) -> nn.Module:
        """Build the registered ``kind`` named by ``spec.type`` with this context (plus changes)."""
        entry = self.registry.get(kind, spec.type)
        ctx = self.replace(**changes) if changes else self
        return entry.factory(spec, ctx)
