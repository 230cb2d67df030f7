"""Resampling grid-shaped tensors to another input size: position tables, relative-offset tables,
per-window tables -- pure functions of tensors and grids.

``set_input_size`` rebuilds a model from its spec (:mod:`vitzoo.builder`; each constructor
derives its grids, windows and tables from ``image_size``) and carries the weights across with
:func:`adapt_state_dict`: most tensors keep their shape; the few whose shape follows the grid are
resampled here by rules keyed on what the tensor *is*:

* learned absolute positions (``LearnedPositions``): the patch part is resampled on its grid
  with :func:`vitzoo.components.posenc.resize_grid_embedding`, the way the module's spec says
  (its :class:`~vitzoo.components.posenc.TableResampling`), prefix positions kept;
* a (1, C, h, w) position map (PiT): resampled bicubically;
* a (1, N, C) table on a module that knows its ``grid``: resampled like learned positions;
* relative-position tables ((2h-1)(2w-1), heads): resampled on their offset grid
  (:func:`resize_relative_position_table`); BEiT's whole-sequence tables are resampled as its
  reference does (:func:`resize_relative_table_geometric`, through the module's own rule);
* a (heads, h*w) per-offset bias on a module that knows its ``grid`` (LeViT): resampled as a
  map;
* a module may define ``resample_tensor(name, tensor, old_module)`` for its own tensors
  (NesT's blocked positions, SepViT's window tokens) -- tried first;
* anything else whose shape changed is an error naming the tensor (never a silent skip).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.layers import to_pair
from vitzoo.components.partition import window_partition, window_reverse
from vitzoo.components.posenc import LearnedPositions, TableResampling, resize_grid_embedding
from vitzoo.errors import InputSizeError


def resize_relative_position_table(
    table: torch.Tensor, old_window: Sequence[int], new_window: Sequence[int]
) -> torch.Tensor:
    """Resample a ((2h-1)(2w-1), heads) relative-offset table to another window size."""
    old = (2 * old_window[0] - 1, 2 * old_window[1] - 1)
    new = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    if old == new:
        return table
    heads = table.shape[-1]
    grid = table.reshape(1, *old, heads).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(-1, heads).to(table.dtype)


def geometric_offsets(src: int, dst: int) -> list[float]:
    """Where the ``src`` offsets of one axis of a relative table sit after spreading them over
    ``dst`` offsets (BEiT's fine-tuning recipe, microsoft/unilm ``run_class_finetuning.py``, as
    timm's ``resize_rel_pos_bias_table`` computes it): the gaps grow geometrically from the
    centre, the ratio found by bisection so the outermost offset reaches ``dst // 2``. Near
    offsets keep their value, far ones are stretched. Plain Python floats, as the reference's.
    """
    half = src // 2
    low, high = 1.01, 1.5
    ratio = low
    while high - low > 1e-6:
        ratio = (low + high) / 2.0
        reach = 1.0 * (1.0 - ratio**half) / (1.0 - ratio)  # 1 + r + ... + r^(half-1)
        if reach > dst // 2:
            high = ratio
        else:
            low = ratio
    outward, offset = [], 1.0
    for i in range(half):
        outward.append(offset)
        offset += ratio ** (i + 1)
    return [-o for o in reversed(outward)] + [0.0] + outward


def _bracket(points: torch.Tensor, at: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Left / right neighbours among sorted ``points`` of each of ``at`` and the distances to
    them; outside the points the nearer end value is taken (the distance past it counts 0)."""
    last = points.shape[0] - 1
    right = torch.bucketize(at, points).clamp(max=last)
    left = (right - 1).clamp(0, last)
    to_left = (at - points[left]).clamp(min=0)
    to_right = (points[right] - at).clamp(min=0)
    both_zero = (to_left == 0) & (to_right == 0)
    to_left = torch.where(both_zero, torch.ones_like(to_left), to_left)
    to_right = torch.where(both_zero, torch.ones_like(to_right), to_right)
    return left, right, to_left, to_right


def interpolate_uneven_grid(
    values: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, at_y: torch.Tensor, at_x: torch.Tensor
) -> torch.Tensor:
    """Bilinear interpolation of (C, len(ys), len(xs)) ``values`` sampled at the sorted, unevenly
    spaced ``ys`` / ``xs``, at the points (``at_y``, ``at_x``) (same shape): (C, *at_y.shape).

    Written as the distance-weighted sum over the four corners divided by the cell's area,
    which is how timm's ``RegularGridInterpolator`` (used by ``resize_rel_pos_bias_table``)
    evaluates it, so float32 results agree to the bit."""
    y0, y1, dy0, dy1 = _bracket(ys, at_y)
    x0, x1, dx0, dx1 = _bracket(xs, at_x)
    total = values[:, y0, x0] * (dy1 * dx1)
    total = total + values[:, y0, x1] * (dy1 * dx0)
    total = total + values[:, y1, x0] * (dy0 * dx1)
    total = total + values[:, y1, x1] * (dy0 * dx0)
    return total / ((dy0 + dy1) * (dx0 + dx1))


def resize_relative_table_geometric(
    table: torch.Tensor, old_window: Sequence[int], new_window: Sequence[int]
) -> torch.Tensor:
    """Resample a ((2h-1)(2w-1), heads) relative-offset table to another window the way BEiT's
    reference (timm ``resize_rel_pos_bias_table``, no SciPy) does: each axis's old offsets are
    spread geometrically (:func:`geometric_offsets`) and the table is interpolated bilinearly at
    the new integer offsets, in float32."""
    old = (2 * old_window[0] - 1, 2 * old_window[1] - 1)
    new = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    if old == new:
        return table
    heads = table.shape[-1]
    if table.is_meta:
        return table.new_empty(new[0] * new[1], heads)
    ys = torch.tensor(geometric_offsets(old[0], new[0]), dtype=torch.float32)
    xs = torch.tensor(geometric_offsets(old[1], new[1]), dtype=torch.float32)
    reach_y, reach_x = new[0] // 2.0, new[1] // 2.0
    at = torch.meshgrid(
        torch.arange(-reach_y, reach_y + 0.1, 1.0, dtype=torch.float32),
        torch.arange(-reach_x, reach_x + 0.1, 1.0, dtype=torch.float32),
        indexing="ij",
    )
    at = [a.contiguous() for a in at]
    grid = table.detach().float().cpu().t().reshape(heads, *old)
    out = interpolate_uneven_grid(grid, ys, xs, *at)
    return out.reshape(heads, -1).t().contiguous().to(device=table.device, dtype=table.dtype)


def resize_map(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample a (1, C, h, w) map bicubically to ``size``."""
    out = F.interpolate(tensor.float(), size=tuple(size), mode="bicubic", align_corners=False)
    return out.to(tensor.dtype)


def resize_per_window_table(
    tensor: torch.Tensor, old_windows: Sequence[int], new_windows: Sequence[int]
) -> torch.Tensor:
    """Resample (1, nh*nw, *rest) -- one entry per window, row-major (SepViT's window tokens)
    -- to another window grid, as a map over the windows."""
    rest = tensor.shape[2:]
    flat = tensor.reshape(1, *old_windows, -1).permute(0, 3, 1, 2)
    out = resize_map(flat, new_windows).permute(0, 2, 3, 1)
    return out.reshape(1, new_windows[0] * new_windows[1], *rest)


def resize_blocked_map(
    tensor: torch.Tensor, block: Sequence[int], old_grid: Sequence[int], new_grid: Sequence[int]
) -> torch.Tensor:
    """Resample (1, blocks, bh*bw, C) -- a map split into blocks (NesT's positions) -- to another
    grid: blocks put back together, the map resampled, and split again."""
    dim = tensor.shape[-1]
    full = window_reverse(tensor.reshape(-1, block[0] * block[1], dim), block, old_grid)
    full = resize_map(full.permute(0, 3, 1, 2), new_grid).permute(0, 2, 3, 1)
    return window_partition(full.contiguous(), block).reshape(1, -1, block[0] * block[1], dim)


def resize_token_table(
    tensor: torch.Tensor,
    old_grid: Sequence[int],
    new_grid: Sequence[int],
    prefix: int,
    resampling: TableResampling | None = None,
) -> torch.Tensor:
    """Resample a (1, prefix + prod(old_grid), C) position table to ``new_grid``: the patch part
    on its grid (:func:`~vitzoo.components.posenc.resize_grid_embedding`, by ``resampling``),
    the ``prefix`` entries (class / distillation tokens) kept as they are. Both
    ``set_input_size`` and weight adaptation (:mod:`vitzoo.weights.adapt`) resample absolute
    tables with it."""
    head, patches = tensor[:, :prefix], tensor[:, prefix:]
    resized = resize_grid_embedding(patches, tuple(old_grid), tuple(new_grid), resampling)
    return torch.cat([head, resized], 1)


def table_resamplings(model: nn.Module) -> dict[str, TableResampling]:
    """State-dict key -> how that learned position table resamples, for every one in ``model``
    (weight adaptation to another image size reads it, so a loaded table is resampled as the
    model itself would resample it)."""
    return {
        f"{name}.pos_embed" if name else "pos_embed": module.resampling
        for name, module in model.named_modules()
        if isinstance(module, LearnedPositions)
    }


def resize_tensor(
    key: str, old_module: nn.Module, new_module: nn.Module, tensor: torch.Tensor, shape: Any
) -> torch.Tensor:
    """``tensor`` (entry ``key`` of ``old_module``) resampled to ``shape`` for ``new_module``."""
    attr = key.rpartition(".")[2]
    shape = tuple(shape)
    own_rule = getattr(new_module, "resample_tensor", None)
    if own_rule is not None:  # a module that knows how its grid-shaped tensors resample
        resampled = own_rule(attr, tensor, old_module)
        if resampled is not None:
            return resampled
    old_grid = tuple(getattr(old_module, "grid", ()) or ())
    new_grid = tuple(getattr(new_module, "grid", ()) or ())
    if isinstance(old_module, LearnedPositions) and attr == "pos_embed":
        return resize_token_table(
            tensor, old_module.grid, new_module.grid, old_module.num_prefix, new_module.resampling
        )
    if attr == "relative_position_bias_table" and hasattr(old_module, "window"):
        return resize_relative_position_table(
            tensor, to_pair(old_module.window), to_pair(new_module.window)
        )
    if tensor.ndim == 4 and tensor.shape[:2] == shape[:2] and tensor.shape[0] == 1:
        return resize_map(tensor, shape[2:])
    if (
        tensor.ndim == 3
        and tensor.shape[0] == 1
        and tensor.shape[-1] == shape[-1]
        and old_grid
        and new_grid
    ):
        prefix = tensor.shape[1] - math.prod(old_grid)
        if prefix >= 0 and shape[1] - math.prod(new_grid) == prefix:
            return resize_token_table(tensor, old_grid, new_grid, prefix)
    if (
        tensor.ndim == 2
        and len(old_grid) == 2
        and tensor.shape[1] == math.prod(old_grid)
        and shape[1] == math.prod(new_grid)
    ):  # per-head bias over the offsets of a grid, row-major (LeViT's attention biases)
        table = tensor.reshape(1, tensor.shape[0], *old_grid)
        return resize_map(table, new_grid).reshape(tensor.shape[0], -1)
    raise InputSizeError(
        f"{key}: shape {tuple(tensor.shape)} becomes {shape} at the new input size and no "
        "resampling rule covers it"
    )


def adapt_state_dict(old: nn.Module, new: nn.Module) -> dict[str, torch.Tensor]:
    """``old``'s state dict with every grid-dependent tensor resampled to ``new``'s shapes."""
    target = new.state_dict()
    old_modules = dict(old.named_modules())
    new_modules = dict(new.named_modules())
    state: dict[str, torch.Tensor] = {}
    for key, tensor in old.state_dict().items():
        want = target.get(key)
        if want is None or want.shape == tensor.shape:
            state[key] = tensor
            continue
        owner = key.rpartition(".")[0]
        state[key] = resize_tensor(
            key, old_modules[owner], new_modules[owner], tensor, want.shape
        ).to(want.dtype)
    return state
