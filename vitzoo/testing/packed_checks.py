"""Checks for architectures that offer ``packed-images``: a list of images of different sizes,
packed into shared sequences (NaViT, SigLIP 2 NaFlex, a third party's native-resolution model).

What a packed batch promises, held for every such variant:

* the model says what a data pipeline needs to feed it (``native_resolution``: the patch size,
  the largest grid its positions cover) -- ``data.max_patches`` reads it;
* packing is exact: each image's output in a packed batch is that image's output alone;
* no image sees another: changing one image leaves every other image's output where it was;
* a packed batch trains: the loss of a packed forward reaches the parameters.

The model runs in float64, so "exact" can be tight whatever CPU rounds float32 sums.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vitzoo.capabilities import Capability, offers_of
from vitzoo.testing.checks import Check, assert_same, fail, register_check_generator, seeded
from vitzoo.testing.variants import Variant

#: Tolerance of "the same output" in float64 (packing changes only the order of sums).
EXACT = {"atol": 1e-9, "rtol": 0.0}


def _native(variant: Variant, model: nn.Module) -> tuple[tuple[int, int], tuple[int, int]]:
    """(patch size, the largest grid to try) of a packed-images model."""
    native = getattr(model, "native_resolution", None)
    if native is None or not hasattr(native, "patch_size"):
        raise fail(
            variant,
            "offers packed-images but has no native_resolution (patch_size, max_grid): "
            "data.max_patches cannot size images for it",
        )
    ph, pw = native.patch_size
    gh, gw = native.max_grid or (4, 4)
    return (ph, pw), (min(gh, 4), min(gw, 4))


def _images(variant: Variant, model: nn.Module, seed: int = 0) -> list[torch.Tensor]:
    """Four float64 images of different sizes and aspect ratios within the model's grid."""
    (ph, pw), (gh, gw) = _native(variant, model)
    grids = [(gh, max(1, gw // 2)), (max(1, gh // 2), gw), (1, 1), (gh, gw)]
    channels = int(getattr(getattr(model, "config", None), "in_chans", 3))
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(channels, h * ph, w * pw, generator=generator, dtype=torch.float64)
        for h, w in grids
    ]


def _model(variant: Variant) -> nn.Module:
    return variant.build().double()


def check_native_resolution_is_declared(variant: Variant) -> None:
    """``native_resolution`` names a patch size that divides the images the model is fed."""
    model = _model(variant)
    (ph, pw), _ = _native(variant, model)
    if min(ph, pw) < 1:
        raise fail(variant, f"native_resolution.patch_size {(ph, pw)} is not a patch size")


def check_packed_equals_alone(variant: Variant) -> None:
    """Each image's output in a packed batch equals its output run alone."""
    model = _model(variant)
    images = _images(variant, model)
    with torch.no_grad():
        packed = model(images)
        alone = torch.cat([model([image]) for image in images])
    assert_same(variant, "packed outputs against each image alone", packed, alone, **EXACT)


def check_packed_images_stay_apart(variant: Variant) -> None:
    """Changing one image of a packed batch leaves the others' outputs where they were."""
    model = _model(variant)
    images = _images(variant, model)
    changed = list(images)
    with seeded(11):
        changed[0] = torch.randn_like(images[0]) * 2.0
    with torch.no_grad():
        before, after = model(images), model(changed)
    assert_same(variant, "the other images' outputs", after[1:], before[1:], **EXACT)


def check_packed_batch_trains(variant: Variant) -> None:
    """A packed forward in training mode gives every trainable parameter the embedding, blocks
    and head use a finite gradient, as the tensor path does."""
    model = _model(variant).train()
    images = _images(variant, model)
    with seeded(3):
        out: Any = model(images)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    stuck = [
        n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()
    ]
    if stuck:
        raise fail(variant, f"non-finite gradients after a packed step: {stuck[:5]}")
    blocks = [n for n in missing if ".blocks." in f".{n}" or n.startswith("blocks.")]
    if blocks:
        raise fail(variant, f"block parameters got no gradient from a packed batch: {blocks[:5]}")


@register_check_generator("architecture")
def yield_packed_checks(variant: Variant) -> Iterator[Check]:
    if Capability.PACKED_IMAGES.value not in offers_of(variant.entry):
        return
    yield check_native_resolution_is_declared
    yield check_packed_equals_alone
    yield check_packed_images_stay_apart
    yield check_packed_batch_trains
