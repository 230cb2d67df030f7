"""What a component factory is told about the model it is being built into."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from vitzoo.registry import Registry


@dataclass(frozen=True)
class BuildContext:
    """Facts from the enclosing architecture, passed to every ``factory(config, ctx)``.

    Factories read only what they need; architectures fill in what they know with
    :meth:`replace` before building each part. ``build`` lets a composite component (a block, a
    hierarchical stage) build its registered sub-components. Every field has a reader; a field
    nobody reads does not belong here (give the part a config field instead).
    """

    #: The live registry: what :meth:`build` looks parts up in (a host also reads a part's tags).
    registry: Registry
    #: Token width at this point of the model (patchifiers project to it, blocks keep it).
    dim: int = 0
    #: Attention heads for the attention built here.
    num_heads: int = 1
    #: Input channels, for the patchifier / stem.
    in_chans: int = 3
    #: The (h, w) -- or (t, h, w) -- token grid the part sees (posencs, windowed attention).
    grid: tuple[int, ...] = ()
    #: Class / distillation / register tokens in front of the grid tokens.
    num_prefix_tokens: int = 0
    #: Classes the head predicts.
    num_classes: int = 0
    #: Width of the pooled features a head / pooling receives.
    num_features: int = 0
    #: Index of the block being built, counted over the whole model (DeepViT re-attends from a
    #: given layer on).
    layer_index: int = 0
    #: Stochastic-depth rate of the block being built.
    drop_path: float = 0.0
    #: Specs a block builds its token mixer and channel mixer from (``mlp`` also reaches the
    #: pooling: an attention-pool head reuses the model's MLP unless its own spec names one).
    attention: Any = None
    mlp: Any = None

    def replace(self, **changes: Any) -> BuildContext:
        return dataclasses.replace(self, **changes)

    def build(self, kind: str, spec: Any, **changes: Any) -> nn.Module:
        """Build the registered ``kind`` named by ``spec.type`` with this context (plus changes)."""
        entry = self.registry.get(kind, spec.type)
        ctx = self.replace(**changes) if changes else self
        return entry.factory(spec, ctx)
