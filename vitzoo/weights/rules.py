"""The converter vocabulary: rules that map source tensors to vitzoo tensors, as plain data.

A converter is a list of these rules, tried in order against every source key; the first rule
whose ``pattern`` matches a key (``re.fullmatch``) claims it. A mapping rule with ``optional``
set leaves its source tensor unused (for that reason) where the model has no tensor of the
target name -- a part the source carries and the chosen spec leaves out; ``only_if_zero`` (on
:class:`Rename`) does so only for an all-zero tensor (a zero bias is the same function as
none), and otherwise lets later rules have the key. Targets are ``re`` templates
(``\\1``, ``\\g<name>``) expanded from that match, so one rule covers every block of a model.

* :class:`Rename` -- one source tensor to one vitzoo tensor, optionally through tensor ops.
* :class:`Concat` -- several source tensors into one (Hugging Face q, k, v -> vitzoo qkv).
* :class:`Split` -- one source tensor into several vitzoo tensors.
* :class:`Sum` -- several source tensors added into one (a class position folded into the
  class token), optionally reading a tensor another rule also maps.
* :class:`Unused` -- a source tensor left out on purpose, with the reason (a derived buffer
  vitzoo recomputes, a pooler the classifier never uses); :class:`OtherTower` -- the tensors of
  another modality's tower (the text encoder of an image-text model), which a load reports in
  one line.
* :class:`KeepInit` -- a vitzoo tensor the source does not have and vitzoo fills itself.

Tensor ops (``ops=`` of Rename/Concat/Split, applied in order, each given the tensor and the
shape of the vitzoo tensor it will fill): :class:`Reshape`, :class:`Permute`,
:class:`Transpose`, :class:`Gather`, :class:`Slice`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

Shape = tuple[int, ...]


class TensorOp:
    """One named tensor operation; ``apply(tensor, target_shape) -> tensor``."""

    def apply(self, tensor: torch.Tensor, target_shape: Shape) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Reshape(TensorOp):
    """Reshape to ``shape``, or to the vitzoo tensor's own shape when ``shape`` is None."""

    shape: Shape | None = None

    def apply(self, tensor: torch.Tensor, target_shape: Shape) -> torch.Tensor:
        return tensor.reshape(self.shape if self.shape is not None else target_shape)


@dataclass(frozen=True)
class Permute(TensorOp):
    """Reorder axes (``torch.permute``), e.g. channels-last to channels-first."""

    dims: Shape

    def apply(self, tensor: torch.Tensor, target_shape: Shape) -> torch.Tensor:
        return tensor.permute(*self.dims)


@dataclass(frozen=True)
class Transpose(TensorOp):
    """Swap two axes."""

    dim0: int = 0
    dim1: int = 1

    def apply(self, tensor: torch.Tensor, target_shape: Shape) -> torch.Tensor:
        return tensor.transpose(self.dim0, self.dim1)


@dataclass(frozen=True)
class Gather(TensorOp):
    """Re-index along ``dim``: ``index`` is a sequence of positions, or a function of the source
    tensor's shape returning one (for orders that depend on the model's size)."""

    dim: int
    index: Sequence[int] | Callable[[Shape], Sequence[int]]

    def apply(self, tensor: torch.Tensor, target_shape: Shape) -> torch.Tensor:
        index = self.index(tuple(tensor.shape)) if callable(self.index) else self.index
        return tensor.index_select(self.dim, torch.as_tensor(list(index), dtype=torch.long))


@dataclass(frozen=True)
class Slice(TensorOp):
    """``tensor[..., start:stop, ...]`` along ``dim`` (e.g. the patch rows of a position table
    whose first row belongs to the class token)."""

    dim: int
    start: int = 0
    stop: int | None = None

    def apply(self, tensor: torch.Tensor, target_shape: Shape) -> torch.Tensor:
        index = (slice(None),) * (self.dim % tensor.ndim) + (slice(self.start, self.stop),)
        return tensor[index]


def apply_ops(ops: Sequence[TensorOp], tensor: torch.Tensor, target_shape: Shape) -> torch.Tensor:
    for op in ops:
        tensor = op.apply(tensor, target_shape)
    return tensor


#: A target computed from the source key's match and the vitzoo model's tensor shapes, for
#: layouts a template cannot express (index arithmetic: a source's block ``i`` is vitzoo's
#: ``2 i``; a layer whose place depends on the model's depth).
TargetFn = Callable[["re.Match[str]", Mapping[str, Shape]], str]


def expand_target(target: str | TargetFn, match: re.Match[str], shapes: Mapping[str, Shape]) -> str:
    return target(match, shapes) if callable(target) else match.expand(target)


@dataclass(frozen=True)
class Rename:
    """``pattern`` (regex on a source key) -> ``target`` (template of a vitzoo key, or a
    :data:`TargetFn` where the key needs arithmetic)."""

    pattern: str
    target: str | TargetFn
    ops: tuple[TensorOp, ...] = ()
    #: Why the source tensor may stay unused where the model has no ``target`` (see the module doc).
    optional: str = ""
    #: ... only when it is all zeros (a meta tensor, which holds no values, counts as zeros).
    only_if_zero: bool = False

    def __post_init__(self) -> None:
        re.compile(self.pattern)


@dataclass(frozen=True)
class Concat:
    """Several source tensors -> one vitzoo tensor, concatenated along ``dim`` in the given order.

    ``sources[0]`` is the regex; the others are templates expanded from its match, so
    ``(r"l\\.(\\d+)\\.query\\.(weight|bias)", r"l.\\1.key.\\2", r"l.\\1.value.\\2")`` names the
    three tensors of one layer. All must exist, or none is consumed.
    """

    sources: tuple[str, ...]
    target: str
    dim: int = 0
    ops: tuple[TensorOp, ...] = ()
    optional: str = ""

    @property
    def pattern(self) -> str:
        return self.sources[0]


@dataclass(frozen=True)
class Split:
    """One source tensor -> several vitzoo tensors, split along ``dim``.

    ``sizes`` defaults to the vitzoo tensors' own extents along ``dim``. ``ops`` run on the
    whole source tensor before the split.
    """

    pattern: str
    targets: tuple[str, ...]
    dim: int = 0
    sizes: tuple[int, ...] | None = None
    ops: tuple[TensorOp, ...] = ()
    #: Why the source tensor may stay unused where the model has none of the targets.
    optional: str = ""


@dataclass(frozen=True)
class Sum:
    """Several source tensors -> one vitzoo tensor, added element-wise.

    ``sources[0]`` is the regex; the others are templates expanded from its match.
    ``source_ops[i]`` (when given) are source ``i``'s ops before the addition. ``shared`` holds
    the indices of sources that another rule maps too (a part of that tensor goes elsewhere):
    they are read here but left to that rule; every other source is consumed. Strict
    accounting still holds: a shared tensor no other rule maps is reported as unused.

    Example, DINOv2's official layout into a table without a class row (timm's)::

        Sum(("cls_token", "pos_embed"), "cls_token", source_ops=((), (Slice(1, 0, 1),)),
            shared=(1,))
        Rename("pos_embed", "posenc.pos_embed", ops=(Slice(1, 1),))
    """

    sources: tuple[str, ...]
    target: str
    source_ops: tuple[tuple[TensorOp, ...], ...] = ()
    shared: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sources) < 2 or 0 in self.shared:
            raise ValueError("Sum needs two or more sources, the first one not shared")
        if self.source_ops and len(self.source_ops) != len(self.sources):
            raise ValueError("Sum: give ops for every source or for none")

    @property
    def pattern(self) -> str:
        return self.sources[0]


@dataclass(frozen=True)
class Unused:
    """Source tensors deliberately not loaded; ``reason`` is shown in reports."""

    pattern: str
    reason: str


#: Why :class:`OtherTower` tensors are left out (shown in reports).
OTHER_TOWER_REASON = "another tower of a multimodal checkpoint (vitzoo loads its vision tower)"


@dataclass(frozen=True)
class OtherTower(Unused):
    """Source tensors of another modality's tower (an image-text model's text encoder, its
    logit scale): left out, and counted so that a load says in one line that it took the
    vision tower of a multimodal checkpoint."""

    reason: str = OTHER_TOWER_REASON


@dataclass(frozen=True)
class KeepInit:
    """vitzoo tensors (regex on vitzoo keys) that no source tensor fills, by design."""

    pattern: str
    reason: str


Rule = Rename | Concat | Split | Sum | Unused
AnyRule = Rule | KeepInit
