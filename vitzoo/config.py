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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, WrapValidator

from vitzoo.errors import SpecValueError

# --------------------------------------------------------------------------------------------
# Bounded, strict, finite number types shared by every config
# --------------------------------------------------------------------------------------------
#: The largest integer any config field accepts: far above every real size, far below int64
#: (an integer past int64 would otherwise reach torch as "Overflow when unpacking long long").
MAX_INT = 2**31 - 1
#: The largest magnitude a float field accepts (ratios, scales, rates): keeps ``int(dim * r)``
#: and friends finite. NaN and infinity are refused by ``allow_inf_nan=False`` on every base.
MAX_FLOAT = 1e9


class TypeBounds:
    """The range a bounded type allows, checked so that a field's own narrower bounds still hold.

    Why not ``Field(ge=1, le=MAX_INT)`` inside the ``Annotated`` type: pydantic folds all
    ``ge``/``le`` constraints of a field into one, and the type's (inner) ones win, so
    ``out_dim: PositiveInt = Field(65536, ge=2)`` would silently accept 1 and
    ``Field(8, le=64)`` would accept 10^4. Checked after the field's own constraints, with
    pydantic's own error types and messages, and written into the JSON Schema only where the
    field does not state a tighter bound.
    """

    _CHECKS = (
        ("ge", "minimum", "greater_than_equal", "greater than or equal to", lambda v, b: v >= b),
        ("gt", "exclusiveMinimum", "greater_than", "greater than", lambda v, b: v > b),
        ("le", "maximum", "less_than_equal", "less than or equal to", lambda v, b: v <= b),
        ("lt", "exclusiveMaximum", "less_than", "less than", lambda v, b: v < b),
    )

    def __init__(self, **bounds: float) -> None:
        self.bounds = bounds

    def _check(self, value: Any) -> Any:
        from pydantic_core import PydanticCustomError

        for key, _, error, words, holds in self._CHECKS:
            bound = self.bounds.get(key)
            if bound is not None and not holds(value, bound):
                raise PydanticCustomError(error, f"Input should be {words} {{{key}}}", {key: bound})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> Any:
        result = handler(schema)
        for key, json_key, *_ in self._CHECKS:
            if key in self.bounds:
                result.setdefault(json_key, self.bounds[key])
        return result


#: Any integer; strict: ``'8'`` and ``true`` are refused instead of becoming 8 and 1.
Int = Annotated[int, Strict(), TypeBounds(ge=-MAX_INT, le=MAX_INT)]
#: A size, a count or a kernel: 1, 2, 3, ...
PositiveInt = Annotated[int, Strict(), TypeBounds(ge=1, le=MAX_INT)]
#: A count that may be zero (class count 0 = no classifier, register tokens, padding, ...).
NonNegativeInt = Annotated[int, Strict(), TypeBounds(ge=0, le=MAX_INT)]
#: A finite float (integers are accepted: ``ratio: 4`` means 4.0; booleans and strings are not).
FiniteFloat = Annotated[
    float, Strict(), Field(allow_inf_nan=False), TypeBounds(ge=-MAX_FLOAT, le=MAX_FLOAT)
]
#: A finite float > 0 (ratios, learning rates, epsilons, temperatures).
PositiveFloat = Annotated[
    float, Strict(), Field(allow_inf_nan=False), TypeBounds(gt=0.0, le=MAX_FLOAT)
]
#: A finite float >= 0 (weight decay, loss weights, init scales).
NonNegativeFloat = Annotated[
    float, Strict(), Field(allow_inf_nan=False), TypeBounds(ge=0.0, le=MAX_FLOAT)
]
#: A drop rate: 0 <= p < 1 (p = 1 would drop everything).
Rate = Annotated[float, Strict(), Field(allow_inf_nan=False), TypeBounds(ge=0.0, lt=1.0)]
#: A probability: 0 <= p <= 1 (augmentation odds, mask ratios that may cover everything).
Probability = Annotated[float, Strict(), Field(allow_inf_nan=False), TypeBounds(ge=0.0, le=1.0)]


def _one_error(message: str) -> Any:
    """A wrap validator that turns every failure of the inner (union) schema into one message.

    Pydantic reports a failed ``int | tuple[int, int]`` once per branch, with the branch names
    in the path (``image_size.int``, ``image_size.tuple[int, int]``); users want one line at the
    field they wrote.
    """

    def validate(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(f"{message}, got {value!r}") from None

    return WrapValidator(validate)


#: A square or (h, w) size: ``224`` or ``[224, 192]``, every entry a positive integer.
SizeOrPair = Annotated[
    PositiveInt | tuple[PositiveInt, PositiveInt],
    _one_error("expected a positive integer or a pair [h, w] of positive integers"),
]

#: Like :data:`SizeOrPair` but zero is allowed (shifts, offsets): ``0``, ``3`` or ``[3, 0]``.
NonNegativeIntOrPair = Annotated[
    NonNegativeInt | tuple[NonNegativeInt, NonNegativeInt],
    _one_error("expected an integer >= 0 or a pair [h, w] of integers >= 0"),
]

#: One positive size for every axis, or one per axis: ``3`` or ``[1, 3, 3]``.
PositiveIntOrTuple = Annotated[
    PositiveInt | tuple[PositiveInt, ...],
    _one_error("expected a positive integer or a list of positive integers (one per axis)"),
]
#: Like :data:`PositiveIntOrTuple` but zero is allowed (paddings).
NonNegativeIntOrTuple = Annotated[
    NonNegativeInt | tuple[NonNegativeInt, ...],
    _one_error("expected an integer >= 0 or a list of integers >= 0 (one per axis)"),
]


class ComponentConfig(BaseModel):
    """Base of every registered config: unknown keys are errors and configs are immutable.

    Floats are finite everywhere (``allow_inf_nan=False``): ``norm_eps: .nan`` or
    ``layer_scale: .inf`` would otherwise validate and give NaN logits.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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


def check_child(child: Any, name: str, **context: Any) -> None:
    """Run ``child.check(**context)`` and re-raise its errors with ``name`` prefixed to the path."""
    check = getattr(child, "check", None)
    if check is None:
        return
    try:
        check(**context)
    except SpecValueError as exc:
        raise exc.under(name) from None


def check_positive(**values: Sequence[int] | int) -> None:
    """Each named size (an int, or a per-stage / per-axis list of ints) must be >= 1.

    The one spec-time "positive integer" rule with a plain message naming the field (``depth``,
    ``depths.2``): configs call it for their sizes even where the field's type bounds them
    already, so a config built with ``model_construct`` or by a subclass fails just as clearly.
    """
    for name, value in values.items():
        items = list(value) if isinstance(value, Sequence) else [value]
        for i, v in enumerate(items):
            if v < 1:
                where = f"{name}.{i}" if isinstance(value, Sequence) else name
                raise SpecValueError(where, f"must be a positive integer, got {v}")
