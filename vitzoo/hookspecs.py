"""The plugin contract: one pluggy hook per kind, each handed a ``register`` callback.

A plugin module implements any subset of these with ``@vitzoo.hookimpl``. Components,
architectures and objectives are registered as::

    register(name, factory, config=ConfigClass, tags=(...), summary="...", example={...})

where ``factory(config, ctx)`` returns an ``nn.Module`` (``ctx`` is a
:class:`vitzoo.components.context.BuildContext`; for architectures it is ``None`` and the factory
takes only the config). Presets are registered as
``register(name, spec_mapping, citation=..., expected_params=..., summary=...)``; weight
converters as ``register(WeightConverter(...))``.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("vitzoo")
hookimpl = pluggy.HookimplMarker("vitzoo")

#: hook name -> registry kind it fills.
HOOK_KINDS: dict[str, str] = {
    "register_patchifiers": "patchifier",
    "register_positional_encodings": "posenc",
    "register_attention": "attention",
    "register_mlps": "mlp",
    "register_blocks": "block",
    "register_pooling": "pooling",
    "register_heads": "head",
    "register_architectures": "architecture",
    "register_objectives": "objective",
    "register_presets": "preset",
    "register_weight_converters": "converter",
}


@hookspec
def register_patchifiers(register: Any) -> None:
    """Register patchifiers: image/video -> tokens (B, N, D) plus their grid."""


@hookspec
def register_positional_encodings(register: Any) -> None:
    """Register positional encodings: (tokens, grid) -> tokens with positions added."""


@hookspec
def register_attention(register: Any) -> None:
    """Register token-mixing attention modules: (B, N, D) -> (B, N, D)."""


@hookspec
def register_mlps(register: Any) -> None:
    """Register channel-mixing MLPs: (B, N, D) -> (B, N, D)."""


@hookspec
def register_blocks(register: Any) -> None:
    """Register transformer blocks that combine an attention and an MLP."""


@hookspec
def register_pooling(register: Any) -> None:
    """Register poolings: (tokens, num_prefix_tokens) -> (B, D)."""


@hookspec
def register_heads(register: Any) -> None:
    """Register classifier heads: pooled features -> logits."""


@hookspec
def register_architectures(register: Any) -> None:
    """Register whole-model builders (the ``model.type`` of a spec)."""


@hookspec
def register_objectives(register: Any) -> None:
    """Register training objectives (the ``objective.type`` of a spec).

    Their factories are called ``factory(config, octx)`` with a
    :class:`vitzoo.objectives.ObjectiveContext` (the model being trained, class weights, ...).
    """


@hookspec
def register_presets(register: Any) -> None:
    """Register named specs (paper configurations)."""


@hookspec
def register_weight_converters(register: Any) -> None:
    """Register :class:`vitzoo.weights.WeightConverter` objects: ``register(converter)``.

    A family's converters (timm, Hugging Face, official key layouts -> its vitzoo tensors) live
    with the plugin that registers its architecture, so a third-party family ships its own.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add sub-commands to the ``vitzoo`` click group."""
