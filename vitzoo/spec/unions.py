"""Binding ``ComponentSpec(kind)`` placeholders to discriminated unions of what is registered.

A config class declares a field as "some ``attention``" without knowing which attentions exist;
only after the plugins have loaded is the set known. The resolver rebuilds each config class
with such fields typed as the union of the kind's registered configs (discriminated on
``type``), and caches the result on the registry, keyed on the registry's version so that a
plugin registered after the first validation is seen.
"""

from __future__ import annotations

import copy
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import Field, create_model

from vitzoo.config import ComponentConfig, ComponentKind
from vitzoo.registry import Registry


class _Resolver:
    """Rebuilds config classes with their component fields bound to the registered unions."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._classes: dict[type, type] = {}
        self._unions: dict[str, Any] = {}

    def union(self, kind: str) -> Any:
        if kind not in self._unions:
            members = [
                self.config(self.registry.get(kind, n).config) for n in self.registry.names(kind)
            ]
            if not members:
                raise LookupError(f"nothing is registered for kind {kind!r}")
            if len(members) == 1:
                self._unions[kind] = members[0]
            else:
                self._unions[kind] = Annotated[Union[tuple(members)], Field(discriminator="type")]  # noqa: UP007
        return self._unions[kind]

    def config(self, cls: type[ComponentConfig]) -> type[ComponentConfig]:
        if cls in self._classes:
            return self._classes[cls]
        self._classes[cls] = cls  # provisional: guards against self-reference
        changed: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            kinds = [m for m in info.metadata if isinstance(m, ComponentKind)]
            annotation = self.union(kinds[0].kind) if kinds else self.annotation(info.annotation)
            if kinds or annotation is not info.annotation:
                new_info = copy.copy(info)
                new_info.metadata = [m for m in info.metadata if not isinstance(m, ComponentKind)]
                if get_origin(annotation) is Annotated:
                    # An explicit FieldInfo wins over Annotated metadata in create_model, so the
                    # union's discriminator must move onto the field itself.
                    annotation, union_info = get_args(annotation)
                    new_info.discriminator = union_info.discriminator
                changed[name] = (annotation, new_info)
        if changed:
            resolved = create_model(
                cls.__name__,
                __base__=cls,
                __module__=cls.__module__,
                __doc__=cls.__doc__,
                **changed,
            )
            self._classes[cls] = resolved
        return self._classes[cls]

    def annotation(self, tp: Any) -> Any:
        origin, args = get_origin(tp), get_args(tp)
        if origin is Annotated:
            base, *meta = args
            kinds = [m for m in meta if isinstance(m, ComponentKind)]
            if kinds:
                return self.union(kinds[0].kind)
            new_base = self.annotation(base)
            return tp if new_base is base else Annotated[(new_base, *meta)]
        if origin in (Union, types.UnionType):
            new_args = tuple(self.annotation(a) for a in args)
            return tp if new_args == args else Union[new_args]  # noqa: UP007
        if origin in (list, tuple, dict) and args:
            new_args = tuple(a if a is Ellipsis else self.annotation(a) for a in args)
            return tp if new_args == args else origin[new_args]
        if isinstance(tp, type) and issubclass(tp, ComponentConfig):
            return self.config(tp)
        return tp


def registry_version(registry: Registry) -> Any:
    """Changes whenever something is registered or rolled back (caches compare it)."""
    return getattr(registry, "version", None)


def resolver(registry: Registry) -> _Resolver:
    """The registry's resolver, rebuilt when the registry changed since it was made."""
    cached = getattr(registry, "_vitzoo_resolver", None)
    version = registry_version(registry)
    if cached is None or getattr(cached, "version", None) != version:
        # a plugin registered after the first validation must be seen: rebuild the unions
        cached = _Resolver(registry)
        cached.version = version  # type: ignore[attr-defined]
        registry._vitzoo_resolver = cached  # type: ignore[attr-defined]
    return cached


def resolved_config(registry: Registry, kind: str, name: str) -> type[ComponentConfig]:
    """The config class of a registered entry with its component fields bound to unions."""
    return resolver(registry).config(registry.get(kind, name).config)
