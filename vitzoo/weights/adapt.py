"""Adapting source weights to a model that differs in classes, image size or input channels.

No family is named here and no converter declares anything: which tensors depend on
``num_classes`` / ``image_size`` / ``in_chans`` is found by building the target model on the meta
device twice -- once as asked, once with that one field set back to the source's value -- and
comparing state-dict shapes. Then, as timm users expect (each logs one line):

* a new class count re-initialises the head (the target model's fresh init is kept);
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from vitzoo.components.posenc import TableResampling, resize_grid_embedding
from vitzoo.components.resample import resize_token_table
from vitzoo.errors import WeightsError
from vitzoo.weights.converter import Conversion

ADAPTABLE = ("num_classes", "image_size", "in_chans")
Shapes = dict[str, tuple[int, ...]]


@dataclass
class Adaptation:
    """Which vitzoo tensors one differing field touches, and what the source / target values are."""

    field: str
    source_value: Any
    target_value: Any
    keys: list[str] = field(default_factory=list)


def _as_pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return tuple(value)  # type: ignore[return-value]


def plan_adaptations(
    source_model: Mapping[str, Any],
    target_model: Mapping[str, Any],
    shapes_of: Callable[[Mapping[str, Any]], Shapes],
) -> list[Adaptation]:
    """One :class:`Adaptation` per field that differs between source and target model specs."""
    plans = []
    target_shapes: Shapes | None = None
    for name in ADAPTABLE:
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


def apply_adaptations(
    conversion: Conversion,
    plans: list[Adaptation],
    target_shapes: Shapes,
    log: Callable[[str], None],
    resamplings: Mapping[str, TableResampling] | None = None,
) -> None:
    """Rewrite ``conversion`` in place so it fits ``target_shapes``; one log line per field.
    ``resamplings``: how each learned table of the target model resamples (by key)."""
    for plan in plans:
        touched = [k for k in plan.keys if k in conversion.tensors or k in target_shapes]
        if not touched:
            continue
        if plan.field == "num_classes":
            for key in touched:
                conversion.tensors.pop(key, None)
                conversion.origin.pop(key, None)
                if key in target_shapes:
                    conversion.kept_init[key] = "head re-initialised for the new class count"
            log(
                f"head re-initialised: {plan.source_value} -> {plan.target_value} classes "
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
