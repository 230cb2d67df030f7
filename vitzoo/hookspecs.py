"""The plugin contract: one pluggy hook per kind, each handed a ``register`` callback.

A plugin module implements any subset of these with ``@vitzoo.hookimpl``; the reference with a
runnable example per hook is ``docs/plugins.md``. The callbacks are typed by the Protocols
below, so an editor completes the keywords and a type checker catches a wrong one:

* components, architectures and objectives -- :class:`ComponentRegister`::

      register(name, factory, ConfigClass, tags={...}, summary="...", example={...},
               needs={...}, offers={...}, known_failures={...})

  ``factory(config, ctx)`` returns the ``nn.Module`` (a class whose constructor takes
  ``(config, ctx)`` is such a factory). For components and architectures ``ctx`` is a
  :class:`vitzoo.components.context.BuildContext`: an architecture gets the root one (the
  registry, so it can build its parts) and fills in dims for its parts. Objectives get the
  objective context of :mod:`vitzoo.objectives`.
* presets -- :class:`PresetRegister`: ``register(name, spec_mapping, citation=...,
  expected_params=..., summary=..., tags=..., aliases=..., expected_macs=...,
  released={"timm": [...], "hf": [...], "official": [...]})``;
* weight converters -- :class:`ConverterRegister`: ``register(WeightConverter(...))``;
* ``register_commands`` gets the ``vitzoo`` click group itself.

Registration is checked on the spot (:mod:`vitzoo.registry`): names, config classes, tags
(:mod:`vitzoo.tags`) and capabilities (:mod:`vitzoo.capabilities`); a mistake is a
``RegistrationError`` naming the plugin, and that plugin alone is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import click

    from vitzoo.config import ComponentConfig
    from vitzoo.weights.converter import WeightConverter


class ComponentRegister(Protocol):
    """``register`` handed to every component, architecture and objective hook."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        config: type[ComponentConfig],
        *,
        tags: str | Iterable[str] = (),
        summary: str = "",
        example: Mapping[str, Any] | None = None,
        needs: str | Iterable[str] = (),
        offers: str | Iterable[str] = (),
        known_failures: Mapping[str, str] | None = None,
    ) -> None: ...


class PresetRegister(Protocol):
    """``register`` handed to ``register_presets``: a named full spec."""

    def __call__(
        self,
        name: str,
        spec: Mapping[str, Any],
        *,
        citation: str = "",
        expected_params: int | None = None,
        summary: str = "",
        tags: str | Iterable[str] = (),
        aliases: str | Iterable[str] = (),
        expected_macs: int | None = None,
        released: Mapping[str, str | Iterable[str]] | None = None,
    ) -> None: ...


class ConverterRegister(Protocol):
    """``register`` handed to ``register_weight_converters``: one converter object."""

    def __call__(self, converter: WeightConverter) -> None: ...


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
def register_patchifiers(register: ComponentRegister) -> None:
    """Register patchifiers: image/video -> tokens (B, N, D) plus their grid."""


@hookspec
def register_positional_encodings(register: ComponentRegister) -> None:
    """Register positional encodings: (tokens, grid) -> tokens with positions added."""


@hookspec
def register_attention(register: ComponentRegister) -> None:
    """Register token-mixing attention modules: (B, N, D) -> (B, N, D)."""


@hookspec
def register_mlps(register: ComponentRegister) -> None:
    """Register channel-mixing MLPs: (B, N, D) -> (B, N, D)."""


@hookspec
def register_blocks(register: ComponentRegister) -> None:
    """Register transformer blocks that combine an attention and an MLP."""


@hookspec
def register_pooling(register: ComponentRegister) -> None:
    """Register poolings: (tokens, num_prefix_tokens) -> (B, D)."""


@hookspec
def register_heads(register: ComponentRegister) -> None:
    """Register classifier heads: pooled features -> logits."""


@hookspec
def register_architectures(register: ComponentRegister) -> None:
    """Register whole-model builders (the ``model.type`` of a spec).

    The factory gets the root :class:`~vitzoo.components.context.BuildContext` (the registry, to
    build the parts its config names) and returns a :class:`~vitzoo.components.model.VitzooModel`.
    """


@hookspec
def register_objectives(register: ComponentRegister) -> None:
    """Register training objectives (the ``objective.type`` of a spec).

    Their factories are called ``factory(config, octx)`` with a
    :class:`vitzoo.objectives.ObjectiveContext` (the model being trained, class weights, ...).
    """


@hookspec
def register_presets(register: PresetRegister) -> None:
    """Register named specs (paper configurations)."""


@hookspec
def register_weight_converters(register: ConverterRegister) -> None:
    """Register :class:`vitzoo.weights.WeightConverter` objects: ``register(converter)``.

    A family's converters (timm, Hugging Face, official key layouts -> its vitzoo tensors) live
    with the plugin that registers its architecture, so a third-party family ships its own.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``vitzoo`` click group."""
