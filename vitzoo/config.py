"""Config base classes shared by the core and every plugin.

A registered component or architecture declares its options as a subclass of
:class:`ComponentConfig` with a ``type: Literal["name"]`` field. A field that holds *another*
component (an architecture's attention, a block's MLP, ...) is annotated with
``ComponentSpec("attention")``. The set of allowed types for such a field is not known when the
class is written -- plugins add types later -- so the registry rebuilds these classes once every
plugin has loaded, replacing the placeholder by a discriminated union of everything registered for
that kind (see :mod:`vitzoo.spec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class ComponentConfig(BaseModel):
    """Base of every registered config: unknown keys are errors and configs are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def check(self, **context: Any) -> None:
        """Rules that need the surrounding model (image size, width, heads).

        The enclosing architecture calls this during validation with what it knows, e.g.
        ``image_size=(224, 224), dim=384, num_heads=6``. Raise :class:`SpecValueError` naming the
        field at fault. The default accepts everything.
        """


@dataclass(frozen=True)
class ComponentKind:
    """Marks a config field as "one registered component of this kind" (resolved at run time)."""

    kind: str


class UnresolvedComponent(BaseModel):
    """Placeholder used before plugins load: only the ``type`` tag is known."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


def ComponentSpec(kind: str) -> Any:  # noqa: N802 - it is used like a type in annotations
    """Annotation for a field holding one registered component of ``kind``.

    Example: ``attention: ComponentSpec("attention") = component_default(type="mhsa")``.
    """
    return Annotated[UnresolvedComponent, ComponentKind(kind)]


def component_default(**values: Any) -> Any:
    """Default for a ``ComponentSpec`` field, validated against the resolved union.

    Given as plain values (``type="mhsa"``) so the default becomes an instance of whichever
    config class is registered under that name once plugins have loaded.
    """
    return Field(default=dict(values), validate_default=True)


class SpecValueError(ValueError):
    """A cross-field rule failed; ``path`` points at the offending field, relative to the config.

    Raised from a config's validators or :meth:`check` so that the error is reported at the field
    the user has to change (``model.patch.patch_size``), not at the enclosing model.
    """

    def __init__(self, path: str | tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path: tuple[str | int, ...] = tuple(path.split(".")) if isinstance(path, str) else path
        self.message = message

    def under(self, *prefix: str | int) -> SpecValueError:
        return SpecValueError((*prefix, *self.path), self.message)


def check_child(child: Any, name: str, **context: Any) -> None:
    """Run ``child.check(**context)`` and re-raise its errors with ``name`` prefixed to the path."""
    check = getattr(child, "check", None)
    if check is None:
        return
    try:
        check(**context)
    except SpecValueError as exc:
        raise exc.under(name) from None
