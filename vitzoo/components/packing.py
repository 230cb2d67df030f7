"""Sequence packing ("Patch n' Pack", Dehghani et al., 2023, arXiv:2307.06304).

A native-resolution batch is a list of images of different sizes. Each image becomes its own
token sequence (as many tokens as its patch grid has cells, minus any dropped); the sequences
are laid into a few *rows* of one length, several images per row where they fit, and a
block-diagonal attention mask keeps every token inside its own image. Everything position-wise
(MLPs, norms, residuals) runs on the rows unchanged; only attention needs the mask and only the
pooling needs to know where each image starts and ends.

This module is the pure machinery -- where tokens go, the mask, taking them out again, pooling
per image -- shared by every model with a packed path
(:class:`~vitzoo.components.native_vit.NativeVisionTransformer`) and by the data pipeline
(:class:`ImageList` is the batch the data loader hands such a model).

Padding: a row's unused tail holds zero tokens with image id ``-1``. They attend only to each
other (so no softmax row is empty) and nothing real attends to them, so they never change an
image's output; they are dropped before pooling.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn


class ImageList(list):
    """A batch of images that may differ in size: a list of ``(C, H, W)`` tensors.

    The data loader yields it for native-resolution models (``data.max_patches``) where it
    would yield a ``(B, C, H, W)`` tensor, and it answers the few questions a training or
    evaluation loop asks of a batch the way a tensor does: ``.to(device)``, ``.chunk(parts)``
    (micro-batches for gradient accumulation), ``.flip(-1)`` (mirror test-time augmentation)
    and ``.shape[0]`` (the number of images). It is a plain ``list`` otherwise, so a model with
    a packed path sees ``list[Tensor]``.
    """

    def to(self, *args: Any, **kwargs: Any) -> ImageList:
        return ImageList(image.to(*args, **kwargs) for image in self)

    def chunk(self, parts: int) -> tuple[ImageList, ...]:
        """Split like ``torch.chunk``: pieces of ``ceil(len / parts)`` images, the last shorter."""
        size = max(1, -(-len(self) // max(1, parts)))
        return tuple(ImageList(self[i : i + size]) for i in range(0, len(self), size))

    def flip(self, dims: int | Sequence[int]) -> ImageList:
        """Each image flipped (``tensor.flip``): ``flip(-1)`` mirrors every image."""
        return ImageList(image.flip(dims) for image in self)

    @classmethod
    def batch(cls, images: Sequence[torch.Tensor]) -> torch.Tensor | ImageList:
        """One ``(B, C, H, W)`` tensor when the images share a size, else an ImageList."""
        if len({tuple(image.shape) for image in images}) <= 1:
            return torch.stack(list(images))
        return cls(images)

    @property
    def shape(self) -> torch.Size:
        """``(batch,)``: only the batch axis, the one thing all images of the batch share."""
        return torch.Size([len(self)])

    def sizes(self) -> list[tuple[int, ...]]:
        return [tuple(image.shape) for image in self]


def check_images(images: Sequence[Any], channels: int) -> list[torch.Tensor]:
    """The images of a packed batch, each ``(C, H, W)``; anything else is a plain ValueError."""
    if len(images) == 0:
        raise ValueError("a native-resolution batch needs at least one image, got an empty list")
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != channels:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(
                f"image {i} of the batch: expected a ({channels}, H, W) tensor, got {got}"
            )
        out.append(image)
    return out


def same_size_groups(images: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of the images, grouped by size (first-appearance order): each group runs through
    the patchifier and positions as one batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    return list(groups.values())


@dataclass(frozen=True)
class PackedLayout:
    """Where each image's tokens sit: ``rows[i]`` and ``offsets[i]`` for image ``i`` of
    ``lengths[i]`` tokens, in ``num_rows`` rows of ``row_length`` tokens."""

    lengths: tuple[int, ...]
    rows: tuple[int, ...]
    offsets: tuple[int, ...]
    num_rows: int
    row_length: int

    @classmethod
    def greedy(cls, lengths: Sequence[int], capacity: int | None = None) -> PackedLayout:
        """First-fit decreasing: the longest image first, each into the first row with room.

        ``capacity``: tokens per row; ``None`` makes it the longest image (rows as long as
        padding each image would need, but shorter images share them). An image longer than
        ``capacity`` widens every row to its length rather than failing.
        """
        lengths = tuple(int(n) for n in lengths)
        if not lengths or min(lengths) < 1:
            raise ValueError(f"every image needs at least one token, got lengths {lengths}")
        width = max(max(lengths), capacity or 0)
        free: list[int] = []
        rows, offsets = [0] * len(lengths), [0] * len(lengths)
        for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
            row = next((r for r, room in enumerate(free) if room >= lengths[i]), len(free))
            if row == len(free):
                free.append(width)
            rows[i], offsets[i] = row, width - free[row]
            free[row] -= lengths[i]
        return cls(lengths, tuple(rows), tuple(offsets), len(free), width)

    @classmethod
    def padded(cls, lengths: Sequence[int], capacity: int | None = None) -> PackedLayout:
        """One image per row, each padded to the longest (or ``capacity``): the padded batch
        timm's and Hugging Face's NaFlex models take -- what packing saves is measured against it."""
        lengths = tuple(int(n) for n in lengths)
        if not lengths or min(lengths) < 1:
            raise ValueError(f"every image needs at least one token, got lengths {lengths}")
        width = max(max(lengths), capacity or 0)
        count = len(lengths)
        return cls(lengths, tuple(range(count)), (0,) * count, count, width)

    @property
    def num_images(self) -> int:
        return len(self.lengths)

    @property
    def padding(self) -> int:
        """Padding tokens in the rows (the waste a packed batch still carries)."""
        return self.num_rows * self.row_length - sum(self.lengths)

    @property
    def needs_mask(self) -> bool:
        """Whether attention needs a mask: some row holds two images, or padding."""
        return self.num_rows != self.num_images or self.padding > 0

    @cached_property
    def _flat_index(self) -> torch.Tensor:
        # Python arithmetic on the layout's numbers (no tensor maths): under torch.export the
        # index is a constant of the traced program, not a data-dependent computation.
        index: list[int] = []
        for row, offset, length in zip(self.rows, self.offsets, self.lengths, strict=True):
            start = row * self.row_length + offset
            index.extend(range(start, start + length))
        return torch.tensor(index, dtype=torch.long)

    def flat_index(self, device: torch.device | str | None = None) -> torch.Tensor:
        """For the images' tokens concatenated in image order: each one's index in the
        flattened rows ``(num_rows * row_length)``."""
        return self._flat_index.to(device)

    def image_ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``(num_rows, row_length)``: the image each token belongs to, ``-1`` for padding."""
        ids = [-1] * (self.num_rows * self.row_length)
        for row, offset, length, image in zip(
            self.rows, self.offsets, self.lengths, range(self.num_images), strict=True
        ):
            start = row * self.row_length + offset
            ids[start : start + length] = [image] * length
        return torch.tensor(ids, dtype=torch.long, device=device).view(
            self.num_rows, self.row_length
        )

    def attention_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean ``(num_rows, row_length, row_length)``, True where a query may attend to a
        key: both in the same image (or both padding). Block-diagonal per row."""
        ids = self.image_ids(device)
        return ids[:, :, None] == ids[:, None, :]

    def key_padding_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean ``(num_rows, row_length)``, True on tokens of an image: enough for attention
        when every row holds one image (any part that takes a token mask can use it)."""
        return self.image_ids(device) >= 0

    @property
    def one_image_per_row(self) -> bool:
        return self.num_rows == self.num_images

    def cu_seqlens(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Cumulative token counts of the images in concatenation order, ``(images + 1,)`` int32:
        the sequence boundaries a variable-length attention kernel takes."""
        bounds = [0]
        for length in self.lengths:
            bounds.append(bounds[-1] + length)
        return torch.tensor(bounds, dtype=torch.int32, device=device)

    def pack(self, sequences: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-image ``(n_i, D)`` tokens -> rows ``(num_rows, row_length, D)`` (zero padding)."""
        flat = torch.cat(list(sequences), dim=0)
        if flat.shape[0] != sum(self.lengths):
            raise ValueError(
                f"{flat.shape[0]} tokens given for a layout of {sum(self.lengths)} "
                f"(lengths {self.lengths})"
            )
        rows = flat.new_zeros(self.num_rows * self.row_length, *flat.shape[1:])
        rows = rows.index_copy(0, self.flat_index(flat.device), flat)
        return rows.view(self.num_rows, self.row_length, *flat.shape[1:])

    def unpack(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Rows ``(num_rows, row_length, ...)`` -> each image's ``(n_i, ...)`` tokens."""
        flat = rows.reshape(self.num_rows * self.row_length, *rows.shape[2:])
        picked = flat.index_select(0, self.flat_index(rows.device))
        return list(picked.split(list(self.lengths), dim=0))


@dataclass
class PackedTokens:
    """What a packed forward pass hands from the encoder to the head: the rows and their layout."""

    rows: torch.Tensor
    layout: PackedLayout

    def per_image(self) -> list[torch.Tensor]:
        return self.layout.unpack(self.rows)


def pad_tokens(sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``(n_i, D)`` tokens -> ``(B, max n, D)`` (zero padded) and the boolean
    key-padding mask ``(B, max n)``, True on real tokens."""
    lengths = torch.tensor([s.shape[0] for s in sequences])
    padded = nn.utils.rnn.pad_sequence(list(sequences), batch_first=True)
    valid = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, valid.to(padded.device)


_TAKES_MASK: dict[type, bool] = {}


def takes_mask(module: nn.Module) -> bool:
    """Whether ``module.forward`` accepts a ``mask`` argument (poolings that can skip padding)."""
    kind = type(module)
    if kind not in _TAKES_MASK:
        _TAKES_MASK[kind] = "mask" in inspect.signature(module.forward).parameters
    return _TAKES_MASK[kind]


def pool_per_image(
    pool: nn.Module, sequences: Sequence[torch.Tensor], num_prefix_tokens: int
) -> torch.Tensor:
    """One pooled output per image, from each image's own tokens only.

    A pooling that takes a key-padding ``mask`` (attention pooling) sees all images at once,
    padded; any other pooling (class token, mean, ...) sees the images in groups of equal
    length, so it never sees padding and needs no change to work on a packed batch.
    """
    if takes_mask(pool):
        padded, valid = pad_tokens(sequences)
        return pool(padded, num_prefix_tokens, mask=valid)
    groups: dict[int, list[int]] = {}
    for i, tokens in enumerate(sequences):
        groups.setdefault(tokens.shape[0], []).append(i)
    parts, order = [], []
    for members in groups.values():
        parts.append(pool(torch.stack([sequences[i] for i in members]), num_prefix_tokens))
        order.extend(members)
    pooled = torch.cat(parts, dim=0)
    if order == list(range(len(order))):
        return pooled
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return pooled.index_select(0, inverse.to(pooled.device))


def kept_tokens(count: int, rate: float, budget: int | None) -> int:
    """Patch tokens an image of ``count`` keeps under token dropout: a ``rate`` of them dropped
    (at least one kept), then at most ``budget`` (NaViT's per-image token budget)."""
    keep = count if rate <= 0.0 else max(1, int(count * (1.0 - rate)))
    return keep if budget is None else min(keep, budget)


def drop_tokens(tokens: torch.Tensor, num_prefix: int, keep: int) -> torch.Tensor:
    """Keep ``keep`` random patch tokens of one image's ``(n, D)`` tokens, in their order;
    the ``num_prefix`` prefix tokens always stay. Draws from the global RNG."""
    patches = tokens.shape[0] - num_prefix
    if keep >= patches:
        return tokens
    chosen = torch.rand(patches, device=tokens.device).argsort()[:keep].sort().values
    return torch.cat([tokens[:num_prefix], tokens[num_prefix:].index_select(0, chosen)], dim=0)


def _varlen_kernel() -> Any:
    """CUDA's variable-length flash attention (``torch.nn.attention.varlen``), or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


class PackedMask:
    """The attention mask of a packed batch together with its layout.

    Attention (:meth:`~vitzoo.components.attention.AttentionBase.attend`) reads it one of two
    ways: where torch has a variable-length kernel for the inputs (CUDA, half precision, no
    bias, no dropout) every image is one sequence of that kernel -- no mask, no padding
    computed; everywhere else it is the dense block-diagonal mask (:attr:`dense`). A model
    passes one only where every attention routes masks through ``attend`` (``packing:
    greedy`` admits only parts offering ``block-mask``).
    """

    def __init__(self, layout: PackedLayout, device: torch.device | str | None = None) -> None:
        self.layout = layout
        self.device = device
        self._dense: torch.Tensor | None = None

    @property
    def dense(self) -> torch.Tensor:
        """The boolean ``(rows, length, length)`` block-diagonal mask."""
        if self._dense is None:
            self._dense = self.layout.attention_mask(self.device)
        return self._dense

    def takes_varlen(self, q: torch.Tensor) -> bool:
        """Whether the variable-length kernel can run these (rows, heads, length, dim) queries."""
        return (
            q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16)
            and _varlen_kernel() is not None
        )

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scale: float | None = None,
        kernel: Any = None,
    ) -> torch.Tensor:
        """Attention of (rows, heads, length, dim) q, k, v with every image its own sequence:
        the images' tokens gathered, one variable-length call, the outputs put back (padding
        positions get zeros: nothing reads them). ``kernel`` defaults to torch's."""
        kernel = kernel or _varlen_kernel()
        rows, heads, length, dim = q.shape
        index = self.layout.flat_index(q.device)
        cu = self.layout.cu_seqlens(q.device)
        longest = max(self.layout.lengths)

        def gather(t: torch.Tensor) -> torch.Tensor:
            flat = t.transpose(1, 2).reshape(rows * length, heads, t.shape[-1])
            return flat.index_select(0, index)

        out = kernel(gather(q), gather(k), gather(v), cu, cu, longest, longest, scale=scale)
        full = out.new_zeros(rows * length, heads, out.shape[-1]).index_copy(0, index, out)
        return full.view(rows, length, heads, -1).transpose(1, 2)
