"""The ViT base with a packed path: a batch may be a list of images of any size and shape.

``model(images)`` with ``images`` a list of ``(C, H, W)`` tensors (each side a multiple of the
patch size) runs every image at its own resolution and aspect ratio: each is patchified and
given positions for its own grid (images of one size share one call of the patchifier and the
positional encoding, so any registered patchifier / positional encoding works), optionally
thinned by token dropout, and packed with the others into a few rows of tokens
(:mod:`vitzoo.components.packing`). The blocks run on the rows with a block-diagonal attention
mask, then each image is pooled from its own tokens and goes through the head. The result is one
row of logits per image, in the order given, equal (within float tolerance) to running each
image alone.

A ``(B, C, H, W)`` tensor takes the ViT base's path unchanged (no packing, no mask): it is
what ``forward_intermediates``, ONNX and the conformance suite's checks exercise, and it exports
with a dynamic batch like any ViT. The packed path exports too, but only *specialised* to one
batch composition: the rows, their length and the mask are decided in Python from the images'
sizes (a greedy packing), so ``torch.export`` bakes that layout in as constants and the program
refuses a list of other sizes (its shape guards fail); export once per composition, or export the
tensor path. The packed path is proved by its own tests (each image as if alone, no
cross-image attention, the specialised export).

Token dropout (NaViT, Sec. 2.3): while training, each image keeps a random subset of its patch
tokens -- ``patch_dropout`` of them dropped, then at most ``token_budget`` kept -- on either path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from vitzoo.components.context import BuildContext
from vitzoo.components.packing import (
    PackedLayout,
    PackedMask,
    PackedTokens,
    check_images,
    drop_tokens,
    kept_tokens,
    pool_per_image,
    same_size_groups,
)
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import PositiveInt


class NativeVitConfig(VitConfig):
    """ViT base that also takes a list of images of any size, packed into shared sequences."""

    type: Literal["native-vit"] = "native-vit"
    #: Training: the most patch tokens an image keeps (NaViT's per-image token budget); applied
    #: after ``patch_dropout`` (the token-dropout rate). None: no budget.
    token_budget: PositiveInt | None = None
    #: Tokens per packed row. None: as long as the longest image of the batch (the rows a
    #: padded batch would need, shared by the shorter images). A fixed length gives every
    #: batch the same row shape (what a compiled model wants); an image longer than it widens
    #: the rows of its batch.
    pack_length: PositiveInt | None = None
    #: ``greedy``: images share rows where they fit (first-fit decreasing); ``padded``: one image
    #: per row, padded to the longest (timm's / Hugging Face's NaFlex batches; same outputs,
    #: more padding -- benchmarks/native_resolution.py measures the difference).
    packing: Literal["greedy", "padded"] = "greedy"


@dataclass(frozen=True)
class NativeResolution:
    """What a data pipeline needs to feed a model images at their own size: the patch size
    (each side a multiple of it) and the largest patch grid the model's positions cover
    (``None``: any)."""

    patch_size: tuple[int, int]
    max_grid: tuple[int, int] | None = None


class NativeVisionTransformer(VisionTransformer):
    """The ViT base plus the packed path (see the module docstring)."""

    config: NativeVitConfig

    def __init__(self, config: NativeVitConfig, ctx: BuildContext) -> None:
        super().__init__(config, ctx)
        image_size = config.input_extent()
        grid = self.patch.grid_for(image_size)
        patch = tuple(s // g for s, g in zip(image_size, grid, strict=True))
        max_grid = getattr(self.posenc, "max_grid", None)
        self.native_resolution = NativeResolution(patch, max_grid)  # type: ignore[arg-type]

    # -- the packed path -----------------------------------------------------------------------
    def forward_features(self, x: Any) -> Any:
        """A tensor: the ViT base's tokens (B, N, D). A list of images: :class:`PackedTokens`."""
        if isinstance(x, torch.Tensor):
            return super().forward_features(x)
        return self.forward_packed(x)

    def forward_packed(self, images: Any) -> PackedTokens:
        """Images of any sizes -> the encoder's output rows and where each image sits in them."""
        images = check_images(images, self.config.in_chans)
        embedded: dict[int, torch.Tensor] = {}
        for members in same_size_groups(images):
            tokens, _ = self.embed(torch.stack([images[i] for i in members]))
            embedded.update(zip(members, tokens, strict=True))
        sequences = [embedded[i] for i in range(len(images))]
        if self.training:
            sequences = [self.drop_image_tokens(tokens) for tokens in sequences]
        arrange = PackedLayout.greedy if self.config.packing == "greedy" else PackedLayout.padded
        layout = arrange([s.shape[0] for s in sequences], self.config.pack_length)
        rows = layout.pack(sequences)
        return PackedTokens(self.encode(rows, mask=self.packed_mask(layout, rows)), layout)

    def packed_mask(self, layout: PackedLayout, rows: torch.Tensor) -> Any:
        """What attention needs for ``layout``: nothing (one image per row, no padding), a
        key-padding mask (one image per row: any part taking a token mask can use it), or the
        block-diagonal mask -- as a :class:`PackedMask` on CUDA, where torch's variable-length
        kernel can replace it (parts offering ``block-mask`` all route masks through it)."""
        if not layout.needs_mask:
            return None
        if layout.one_image_per_row:
            return layout.key_padding_mask(rows.device)
        if rows.is_cuda:
            return PackedMask(layout, rows.device)
        return layout.attention_mask(rows.device)

    def drop_image_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token dropout of one image's (n, D) tokens (prefix tokens kept)."""
        prefix = self.num_prefix_tokens
        keep = kept_tokens(tokens.shape[0] - prefix, self.config.patch_dropout, self.token_budget)
        return drop_tokens(tokens, prefix, keep)

    @property
    def token_budget(self) -> int | None:
        return self.config.token_budget

    def drop_patches(self, tokens: torch.Tensor, num_prefix: int | None = None) -> torch.Tensor:
        """Token dropout on the tensor path: the rate and the budget, as on the packed path."""
        if not self.training or (self.config.patch_dropout == 0.0 and self.token_budget is None):
            return tokens
        prefix = self.num_prefix_tokens if num_prefix is None else num_prefix
        n = tokens.shape[1] - prefix
        keep = kept_tokens(n, self.config.patch_dropout, self.token_budget)
        if keep >= n:
            return tokens
        batch, _, dim = tokens.shape
        index = torch.rand(batch, n, device=tokens.device).argsort(dim=1)[:, :keep]
        index = index.sort(dim=1).values + prefix
        patches = tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, dim))
        return torch.cat([tokens[:, :prefix], patches], dim=1)

    def pool_tokens(self, features: Any) -> torch.Tensor:
        if isinstance(features, PackedTokens):
            return pool_per_image(self.pool, features.per_image(), self.num_prefix_tokens)
        return super().pool_tokens(features)

    def intermediate_stem(self, x: Any) -> tuple[torch.Tensor, tuple[int, ...]]:
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                "forward_intermediates takes a (B, C, H, W) tensor of images of one size; "
                "call it once per image size for images of several sizes"
            )
        return super().intermediate_stem(x)
