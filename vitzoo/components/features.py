"""Feature extraction for dense prediction: index selection, feature descriptions, the wrapper.

Everything here is architecture-independent. A model supplies its *structure* (the layers that
produce feature maps, through the hooks of :class:`~vitzoo.components.model.VitzooModel`); the
rules for which of them a caller gets live once, in :func:`resolve_feature_indices`, so every
architecture refuses the same bad requests with the same message.

* :func:`resolve_feature_indices` -- ``int`` = the last n layers, a list = those layers
  (negative indices count from the end); out-of-range and duplicate indices are errors, never
  wrapped silently.
* :class:`FeatureInfo` -- one dict per feature layer (``num_chs``, ``reduction``, ``module``,
  ``index``) with timm's accessors (``channels()``, ``reduction()``, ``module_name()``).
* :class:`FeatureExtractor` -- what ``vitzoo.build(..., features_only=True)`` returns: the
  backbone pruned after its last selected layer, whose ``forward`` gives a list of maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from vitzoo.errors import FeatureIndexError

IndexSpec = int | Sequence[int] | None


def resolve_feature_indices(indices: IndexSpec, count: int) -> list[int]:
    """Absolute, ordered-as-given layer indices for ``indices`` over ``count`` feature layers.

    ``None``: all layers. ``int n``: the last ``n`` layers (1 <= n <= count). A sequence: those
    layers, negative ones counted from the end. Anything out of range or repeated is refused:
    wrapping ``[4]`` on four layers to layer 0 hides a caller's off-by-one.
    """
    if count < 1:
        raise FeatureIndexError("this model has no feature layers to select from")
    if indices is None:
        return list(range(count))
    if isinstance(indices, bool) or not isinstance(indices, int | Sequence):
        raise FeatureIndexError(
            f"indices must be an int (last n layers) or a list of layer indices, got {indices!r}"
        )
    if isinstance(indices, int):
        if not 1 <= indices <= count:
            raise FeatureIndexError(
                f"indices={indices} asks for the last {indices} layers; allowed: 1 to {count}"
            )
        return list(range(count - indices, count))
    taken: list[int] = []
    for raw in indices:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise FeatureIndexError(f"layer index {raw!r} is not an integer")
        if not -count <= raw < count:
            raise FeatureIndexError(
                f"layer index {raw} is out of range; allowed: 0 to {count - 1} "
                f"(or -{count} to -1 from the end)"
            )
        index = raw % count
        if index in taken:
            raise FeatureIndexError(
                f"layer {index} is requested twice in {list(indices)}; give each layer once"
            )
        taken.append(index)
    if not taken:
        raise FeatureIndexError("indices is empty; give at least one layer index")
    return taken


def nominal_reduction(input_extent: int, feature_extent: int) -> int:
    """The stride a feature map is "at": exact when it divides, else the nearest power of two.

    Convolution stems without padding (PiT) give 7 positions for 32 pixels at stride 4, so an
    inexact ratio is rounded to the power of two a detection neck expects.
    """
    if feature_extent <= 0:
        return input_extent
    if input_extent % feature_extent == 0:
        return input_extent // feature_extent
    ratio = input_extent / feature_extent
    return 2 ** round(math.log2(ratio))


class FeatureInfo(Sequence[dict[str, Any]]):
    """Descriptions of feature layers: a list of ``{num_chs, reduction, module, index}`` dicts.

    Accessors follow timm's ``FeatureInfo``: ``channels()`` / ``reduction()`` /
    ``module_name()`` give the values of every layer, or of layer ``idx`` (an int or a list).
    """

    def __init__(self, entries: Sequence[dict[str, Any]]) -> None:
        self._entries = [dict(e) for e in entries]

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"FeatureInfo({self._entries!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureInfo):
            return self._entries == other._entries
        return isinstance(other, list) and self._entries == other

    def select(self, indices: Sequence[int]) -> FeatureInfo:
        return FeatureInfo([self._entries[i] for i in indices])

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [e[key] for e in self._entries]
        if isinstance(idx, int):
            return self._entries[idx][key]
        return [self._entries[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)


class FeatureExtractor(nn.Module):
    """A backbone for dense prediction: ``forward(x)`` -> list of (B, C, H, W) feature maps.

    Built by ``vitzoo.build(..., features_only=True, out_indices=...)``. The wrapped model is
    pruned after the last selected layer (its head and unused tail blocks are gone, so they
    cost nothing and take no gradient); ``feature_info`` describes the selected outputs only.
    ``model`` stays reachable (its spec, ``set_input_size``). A pruned model is not a whole
    checkpoint, so this wrapper has no ``vitzoo_spec`` and ``vitzoo.save`` refuses it: save the
    full model, and wrap a loaded one -- ``FeatureExtractor(vitzoo.load(path), out_indices)``.
    """

    def __init__(
        self,
        model: nn.Module,
        out_indices: IndexSpec = None,
        *,
        norm: bool = False,
        output_fmt: str = "NCHW",
        prune: bool = True,
    ) -> None:
        super().__init__()
        full_info = model.feature_info
        self.out_indices = resolve_feature_indices(out_indices, len(full_info))
        self.feature_info = full_info.select(self.out_indices)
        self.norm = norm
        self.output_fmt = output_fmt
        if prune:
            model.prune_intermediate_layers(self.out_indices, prune_head=True)
        self.model = model

    @property
    def input_size(self) -> tuple[int, ...]:
        return self.model.input_size

    def example_input(self, batch_size: int = 2, **kwargs: Any) -> torch.Tensor:
        return self.model.example_input(batch_size, **kwargs)

    def set_input_size(self, *args: Any, **kwargs: Any) -> None:
        """Adapt the backbone to another input size (see ``VitzooModel.set_input_size``)."""
        self.model.set_input_size(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            x,
            indices=self.out_indices,
            norm=self.norm,
            output_fmt=self.output_fmt,
            intermediates_only=True,
        )
