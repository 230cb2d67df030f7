"""Adapting source weights to a model that differs in classes, image size or input channels.

No family is named here and no converter declares anything: which tensors depend on
``num_classes`` / ``image_size`` / ``in_chans`` is found by building the target model on the meta
device twice -- once as asked, once with that one field set back to the source's value -- and
comparing state-dict shapes. Then, as timm users expect (each logs one line):

* a new class count re-initialises the head (the target model's fresh init is kept) -- unless
  both sides name their classes: then head rows are matched by class name (a class both know
  keeps its trained row, wherever it sits; a new class gets a fresh row), also when the count
  is the same and only the order differs (a swapped order would silently swap the labels);
* a new image size resamples position tables with the shared
  :func:`~vitzoo.components.posenc.resize_grid_embedding` (absolute tables with prefix tokens,
  relative-position tables alike), a learned table the way its module resamples it (the
  ``resamplings`` the caller passes: interpolation, antialias, offset); integer index buffers
  are recomputed by the model;
* 1 input channel sums the first layer's weights over channels; more channels repeat them and
  scale by ``source / target`` so activations keep their size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vitzoo.components.posenc import TableResampling, resize_grid_embedding
from vitzoo.components.resample import resize_token_table
from vitzoo.errors import WeightsError
from vitzoo.weights.converter import Conversion

ADAPTABLE = ("num_classes", "image_size", "in_chans")
Shapes = dict[str, tuple[int, ...]]
#: Class names that only number the outputs (HF's default ``LABEL_3``, vitzoo's ``class_3``).
_PLACEHOLDER = re.compile(r"^(LABEL_|class_)\d+$")


@dataclass
class Adaptation:
    """Which vitzoo tensors one differing field touches, and what the source / target values are.

    For ``num_classes`` with class names on both sides, ``classes`` holds (source names, target
    names) and ``axes`` the class axis of each key: rows are then matched by name.
    """

    field: str
    source_value: Any
    target_value: Any
    keys: list[str] = field(default_factory=list)
    classes: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    axes: dict[str, int] = field(default_factory=dict)


def named_classes(names: Sequence[str] | None) -> tuple[str, ...] | None:
    """``names`` when they name classes; None when absent or mere output numbers."""
    if not names or all(_PLACEHOLDER.match(str(n)) for n in names):
        return None
    return tuple(str(n) for n in names)


def _class_axes(target: Shapes, other: Shapes) -> tuple[list[str], dict[str, int]]:
    """Keys whose shape depends on the class count, and the one axis it changes in each."""
    keys = sorted(k for k in set(target) | set(other) if target.get(k) != other.get(k))
    axes = {}
    for key in keys:
        a, b = target.get(key), other.get(key)
        if a is not None and b is not None and len(a) == len(b):
            diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
            if len(diff) == 1:
                axes[key] = diff[0]
    return keys, axes


def _plan_classes(
    source_model: Mapping[str, Any],
    target_model: Mapping[str, Any],
    shapes_of: Callable[[Mapping[str, Any]], Shapes],
    target_shapes: Shapes,
    classes: tuple[Sequence[str] | None, Sequence[str] | None],
) -> Adaptation | None:
    """The ``num_classes`` plan: by name when both sides name their classes (also for the same
    count in another order), else by count alone (None when the counts agree)."""
    src, dst = source_model.get("num_classes"), target_model.get("num_classes")
    if src is None or dst is None:
        return None
    names = (named_classes(classes[0]), named_classes(classes[1]))
    by_name = (
        names[0] is not None
        and names[1] is not None
        and (len(names[0]), len(names[1])) == (src, dst)
        and names[0] != names[1]
    )
    if src == dst and not by_name:
        return None
    # the class-dependent tensors: against the source's count, or one more when it is the same
    other = shapes_of({**target_model, "num_classes": src if src != dst else dst + 1})
    keys, axes = _class_axes(target_shapes, other)
    plan = Adaptation("num_classes", src, dst, keys)
    if by_name:
        plan.classes, plan.axes = (names[0], names[1]), axes  # type: ignore[assignment]
    return plan


def _as_pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return tuple(value)  # type: ignore[return-value]


def plan_adaptations(
    source_model: Mapping[str, Any],
    target_model: Mapping[str, Any],
    shapes_of: Callable[[Mapping[str, Any]], Shapes],
    classes: tuple[Sequence[str] | None, Sequence[str] | None] = (None, None),
) -> list[Adaptation]:
    """One :class:`Adaptation` per field that differs between source and target model specs
    (``classes``: the source's and the target's class names, where known)."""
    plans = []
    target_shapes: Shapes | None = None
    for name in ADAPTABLE:
        if name == "num_classes":
            target_shapes = target_shapes or shapes_of(target_model)
            plan = _plan_classes(source_model, target_model, shapes_of, target_shapes, classes)
            plans += [plan] if plan is not None else []
            continue
        src, dst = source_model.get(name), target_model.get(name)
        if src is None or dst is None:
            continue
        if (name == "image_size" and _as_pair(src) == _as_pair(dst)) or src == dst:
            continue
        if target_shapes is None:
            target_shapes = shapes_of(target_model)
        reverted = shapes_of({**target_model, name: src})
        keys = sorted(
            k for k in set(target_shapes) | set(reverted) if target_shapes.get(k) != reverted.get(k)
        )
        plans.append(Adaptation(name, src, dst, keys))
    return plans


def _grid_of(n: int, aspect: tuple[int, int]) -> tuple[int, int] | None:
    """A (h, w) grid of ``n`` cells with h / w == aspect (square first)."""
    side = math.isqrt(n)
    if side * side == n and aspect[0] == aspect[1]:
        return side, side
    for h in range(1, n + 1):
        if n % h == 0 and h * aspect[1] == (n // h) * aspect[0]:
            return h, n // h
    if side * side == n:
        return side, side
    return None


def _aspect(size: tuple[int, int]) -> tuple[int, int]:
    g = math.gcd(*size)
    return size[0] // g, size[1] // g


def resample_table(
    tensor: torch.Tensor,
    target_shape: tuple[int, ...],
    source_size: tuple[int, int],
    target_size: tuple[int, int],
    resampling: TableResampling | None = None,
) -> torch.Tensor:
    """Resample a position table along the axis (or adjacent axis pair) whose extent changed
    (``resampling``: how, for a learned table whose module says so; else bicubic)."""
    diff = [i for i, (a, b) in enumerate(zip(tensor.shape, target_shape, strict=True)) if a != b]
    if len(diff) == 2 and diff[1] == diff[0] + 1:  # an (..., h, w) map
        i, j = diff
        moved = tensor.movedim((i, j), (0, 1))
        old, new = tuple(moved.shape[:2]), (target_shape[i], target_shape[j])
        rest = moved.shape[2:]
        flat = moved.reshape(1, old[0] * old[1], -1)
        out = resize_grid_embedding(flat, old, new, resampling).reshape(*new, *rest)
        return out.movedim((0, 1), (i, j)).contiguous()
    if len(diff) != 1:
        raise ValueError(f"cannot tell which axis of {tuple(tensor.shape)} is the position axis")
    axis = diff[0]
    moved = tensor.movedim(axis, 0)
    n_src, n_dst = moved.shape[0], target_shape[axis]
    for prefix in range(0, 9):
        old = _grid_of(n_src - prefix, _aspect(source_size))
        new = _grid_of(n_dst - prefix, _aspect(target_size))
        if old and new:
            break
    else:
        raise ValueError(f"no 2-D grid fits {n_src} -> {n_dst} positions")
    table = resize_token_table(moved.reshape(1, n_src, -1), old, new, prefix, resampling)
    return table.reshape(n_dst, *moved.shape[1:]).movedim(0, axis).contiguous()


def adapt_input_channels(
    tensor: torch.Tensor, target_shape: tuple[int, ...], source_chans: int
) -> torch.Tensor:
    """First-layer weights for another channel count: sum (1 channel) or repeat-and-scale."""
    axis = next(
        i for i, (a, b) in enumerate(zip(tensor.shape, target_shape, strict=True)) if a != b
    )
    target = target_shape[axis]
    weight = tensor.float()
    if target == 1:
        out = weight.sum(dim=axis, keepdim=True)
    else:
        repeats = math.ceil(target / source_chans)
        out = weight.repeat(*[repeats if d == axis else 1 for d in range(weight.ndim)])
        out = out.narrow(axis, 0, target) * (source_chans / target)
    return out.to(tensor.dtype)


def _kept_source_tensors(
    conversion: Conversion, keys: list[str], target_shapes: Shapes
) -> list[tuple[str, torch.Tensor]]:
    """(key, source tensor) for each of ``keys`` the source has and the target model keeps."""
    return [
        (key, conversion.tensors[key])
        for key in keys
        if key in target_shapes and conversion.tensors.get(key) is not None
    ]


def _match_rows(
    conversion: Conversion,
    plan: Adaptation,
    touched: list[str],
    init: Callable[[str], torch.Tensor],
) -> str | None:
    """Head rows matched by class name: each class the source knows keeps its trained row at
    its new index, a new class keeps the target's fresh row. The log line, or None when no
    class is shared (or a head tensor has no single class axis): then the head is new."""
    source, target = plan.classes or ((), ())
    where = {name: i for i, name in enumerate(source)}
    pairs = [(t, where[name]) for t, name in enumerate(target) if name in where]
    if not pairs or any(k not in plan.axes for k in touched if k in conversion.tensors):
        return None
    for key in touched:
        tensor = conversion.tensors.get(key)
        if tensor is None:
            continue
        axis, rows = plan.axes[key], init(key).clone().to(tensor.dtype)
        index_t = torch.tensor([t for t, _ in pairs])
        index_s = torch.tensor([s for _, s in pairs])
        rows.index_copy_(axis, index_t, tensor.index_select(axis, index_s))
        conversion.tensors[key] = rows
    new = [name for name in target if name not in where]
    dropped = [name for name in source if name not in set(target)]
    moved = sum(1 for t, s in pairs if t != s)
    parts = [f"{len(pairs)} of {len(target)} classes keep their trained head rows"]
    if moved:
        parts[0] += f" ({moved} moved to the data's order)"
    if new:
        parts.append(f"re-initialised for new {_names(new)}")
    if dropped:
        parts.append(f"dropped the checkpoint's {_names(dropped)}")
    return "head rows matched by class name: " + "; ".join(parts)


def _names(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


def apply_adaptations(
    conversion: Conversion,
    plans: list[Adaptation],
    target_shapes: Shapes,
    log: Callable[[str], None],
    init: Callable[[str], torch.Tensor] | None = None,
    resamplings: Mapping[str, TableResampling] | None = None,
) -> None:
    """Rewrite ``conversion`` in place so it fits ``target_shapes``; one log line per field.

    ``init(key)`` gives the target model's freshly initialised tensor: head rows matched by
    class name are written over it (the rows of new classes stay as initialised).
    ``resamplings``: how each learned table of the target model resamples (by key).
    """
    for plan in plans:
        touched = [k for k in plan.keys if k in conversion.tensors or k in target_shapes]
        if not touched:
            continue
        if plan.field == "num_classes" and plan.classes is not None and init is not None:
            line = _match_rows(conversion, plan, touched, init)
            if line is not None:
                log(line)
                continue
        if plan.field == "num_classes":
            for key in touched:
                conversion.tensors.pop(key, None)
                conversion.origin.pop(key, None)
                if key in target_shapes:
                    conversion.kept_init[key] = "head re-initialised for the new class count"
            why = (
                "no class name in common"
                if plan.source_value == plan.target_value
                else f"{plan.source_value} -> {plan.target_value} classes"
            )
            log(
                f"head re-initialised: {why} "
                f"({', '.join(k for k in touched if k in target_shapes) or 'no classifier'})"
            )
        else:  # image_size / in_chans: rewrite each tensor the source has and the target keeps
            rewrite = _REWRITES[plan.field]
            done = [
                note
                for key, tensor in _kept_source_tensors(conversion, touched, target_shapes)
                if (
                    note := rewrite(
                        conversion, plan, key, tensor, target_shapes[key], resamplings or {}
                    )
                )
            ]
            if done:
                log(_adaptation_note(plan, done))


def _resample_position_table(
    conversion: Conversion,
    plan: Adaptation,
    key: str,
    tensor: torch.Tensor,
    shape: tuple[int, ...],
    resamplings: Mapping[str, TableResampling],
) -> str | None:
    """A new image size: resample a position table; an index buffer is the model's own."""
    if not tensor.is_floating_point():
        del conversion.tensors[key]
        conversion.kept_init[key] = "index buffer recomputed for the new image size"
        return None
    try:
        conversion.tensors[key] = resample_table(
            tensor,
            shape,
            _as_pair(plan.source_value),
            _as_pair(plan.target_value),
            resamplings.get(key),
        )
    except ValueError as exc:
        raise WeightsError(
            f"cannot resample {key} {tuple(tensor.shape)} -> {shape} "
            f"for image size {plan.target_value}: {exc}"
        ) from None
    return f"{key} {tuple(tensor.shape)} -> {tuple(shape)}"


def _adapt_first_layer(
    conversion: Conversion,
    plan: Adaptation,
    key: str,
    tensor: torch.Tensor,
    shape: tuple[int, ...],
    resamplings: Mapping[str, TableResampling],
) -> str:
    """A new channel count: the first layer's weights summed or repeated-and-scaled."""
    conversion.tensors[key] = adapt_input_channels(tensor, shape, int(plan.source_value))
    return key


_REWRITES = {"image_size": _resample_position_table, "in_chans": _adapt_first_layer}


def _adaptation_note(plan: Adaptation, done: list[str]) -> str:
    """The one log line of an image-size or channel adaptation."""
    if plan.field == "image_size":
        return (
            f"position tables resampled for image size {plan.source_value} -> "
            f"{plan.target_value}: {'; '.join(done)}"
        )
    how = "summed over channels" if plan.target_value == 1 else "repeated and scaled"
    return (
        f"input layer adapted {plan.source_value} -> {plan.target_value} channels "
        f"({how}): {', '.join(done)}"
    )
