"""Feature checks: the model protocol's feature access, for dense prediction and probes.

Every model gives ``forward_intermediates`` (final features and per-layer outputs). Backbones
(:data:`BACKBONE_CHECK_KINDS`) are held to more: feature maps with ``feature_info``'s channels
and strides at two input sizes, ``features_only`` extraction with and without the head, and
layer indices that are out of range or repeated refused with a ``ValueError``.
:func:`feature_checks_for` says which of them a variant gets; the model checks yield them in
their place (:mod:`vitzoo.testing.model_checks`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vitzoo.spec import SpecError
from vitzoo.testing.checks import (
    BATCH,
    Check,
    assert_finite,
    assert_logits,
    assert_same,
    describe,
    example_input,
    fail,
    forward,
)
from vitzoo.testing.variants import Variant

#: Kinds that get the backbone checks: every architecture, and the components whose behaviour
#: depends on the token grid (a host ViT must still give maps at another input size).
BACKBONE_CHECK_KINDS: frozenset[str] = frozenset(
    {"architecture", "patchifier", "posenc", "attention", "block"}
)


def check_forward_intermediates(variant: Variant) -> None:
    """``forward_intermediates`` gives final features and a non-empty list of per-layer outputs."""
    model = variant.build()
    x = example_input(model)
    with torch.no_grad():
        result = model.forward_intermediates(x)
        last = model.forward_intermediates(x, indices=[-1])
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list)):
        raise fail(
            variant, f"forward_intermediates should return (final, [..]), got {describe(result)}"
        )
    final, layers = result
    if not layers:
        raise fail(variant, "forward_intermediates returned no intermediate outputs")
    for i, t in enumerate([final, *layers]):
        if not isinstance(t, torch.Tensor) or t.shape[0] != BATCH:
            raise fail(variant, f"intermediate {i} should be a batch-{BATCH} Tensor: {describe(t)}")
        assert_finite(variant, t, f"intermediate {i}")
    if len(last[1]) != 1:
        raise fail(
            variant, f"forward_intermediates(indices=[-1]) gave {len(last[1])} outputs, not 1"
        )


# -- backbone checks (feature maps for dense prediction) -----------------------------------------
#: Second input sizes tried by :func:`check_feature_maps_at_two_sizes`: (H + k*r, W + 2*k*r)
#: for these k, r the largest reduction -- a taller-than-wide change of aspect, the first size
#: the spec accepts (windows may need larger steps).
SIZE_STEPS: tuple[int, ...] = (1, 2, 4, 8)


def _feature_layer_count(variant: Variant, model: nn.Module) -> int:
    try:
        names = model.feature_layer_names()
    except NotImplementedError as exc:
        raise fail(variant, f"declares no feature layers: {exc}") from None
    if not names:
        raise fail(variant, "feature_layer_names() is empty: nothing to take feature maps from")
    return len(names)


def _assert_maps_match_info(
    variant: Variant, maps: Any, info: Any, input_shape: tuple[int, ...], where: str
) -> None:
    if not isinstance(maps, list) or len(maps) != len(info):
        raise fail(variant, f"{where}: expected {len(info)} feature maps, got {describe(maps)}")
    height, width = input_shape[-2:]
    for fmap, entry in zip(maps, info, strict=True):
        name, chs, red = entry["module"], entry["num_chs"], entry["reduction"]
        if not isinstance(fmap, torch.Tensor) or fmap.ndim < 4 or fmap.shape[0] != input_shape[0]:
            raise fail(variant, f"{where}: {name} should give a (B, C, H, W) map: {describe(fmap)}")
        if fmap.shape[1] != chs:
            raise fail(
                variant, f"{where}: {name} has {fmap.shape[1]} channels, feature_info says {chs}"
            )
        h, w = fmap.shape[-2:]
        if abs(h - height / red) > 1 or abs(w - width / red) > 1:
            raise fail(
                variant,
                f"{where}: {name} is {h}x{w} for a {height}x{width} input, not at the declared "
                f"reduction {red} (expected about {height / red:.1f}x{width / red:.1f})",
            )
        assert_finite(variant, fmap, f"{where}: {name}")


def _resize_to_another_size(variant: Variant, model: nn.Module, step: int) -> tuple[int, int]:
    """``set_input_size`` to the first of the :data:`SIZE_STEPS` sizes the spec accepts."""
    height, width = model.input_size[-2:]
    refused = []
    for k in SIZE_STEPS:
        size = (height + k * step, width + 2 * k * step)
        try:
            model.set_input_size(size, system=variant.system)
        except SpecError as exc:
            refused.append(f"{size}: {exc.issues[0].message if exc.issues else exc}")
            continue
        break
    else:
        raise fail(variant, f"set_input_size refused every size tried: {refused}")
    if tuple(model.input_size[-2:]) != size:
        raise fail(variant, f"set_input_size{size} left input_size={model.input_size}")
    return size


def check_feature_maps_at_two_sizes(variant: Variant) -> None:
    """Feature maps have feature_info's channels and strides, at the built size and after
    ``set_input_size`` to another (non-square) one; ``NLC`` is the flattened ``NCHW``."""
    model = variant.build()
    count = _feature_layer_count(variant, model)
    info = model.feature_info
    for entry in info:
        try:
            model.get_submodule(entry["module"])
        except AttributeError:
            raise fail(
                variant, f"feature_info names module {entry['module']!r}, which does not exist"
            ) from None
    x = example_input(model)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
        tokens = model.forward_intermediates(
            x, indices=1, output_fmt="NLC", intermediates_only=True
        )
    _assert_maps_match_info(variant, maps, info, tuple(x.shape), "built size")
    _assert_maps_match_info(variant, normed, info, tuple(x.shape), "norm=True")
    assert_same(
        variant,
        "output_fmt='NLC' vs the flattened map",
        tokens[0],
        maps[-1].flatten(2).transpose(1, 2),
    )
    size = _resize_to_another_size(variant, model, max(info.reduction()))
    x2 = example_input(model)
    with torch.no_grad():
        maps2 = model.forward_intermediates(x2, intermediates_only=True)
        logits = model(x2)
    _assert_maps_match_info(variant, maps2, info, tuple(x2.shape), f"after set_input_size{size}")
    assert_finite(variant, logits, f"forward after set_input_size{size}")
    if len(maps2) != count:
        raise fail(
            variant, f"after set_input_size the model has {len(maps2)} feature layers, not {count}"
        )


def check_features_only(variant: Variant) -> None:
    """``features_only`` backbones give the full model's maps, with the head kept (unpruned)
    and without it (pruned: head and unused tail layers gone); feature_info selects."""
    from vitzoo.components.features import FeatureExtractor

    model = variant.build()
    count = _feature_layer_count(variant, model)
    indices = list(range(count))[-2:]
    x = example_input(model)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=indices, intermediates_only=True)
    full = FeatureExtractor(variant.build(), indices, prune=False)
    pruned = FeatureExtractor(variant.build(), indices)
    for label, extractor in (("with the head", full), ("without the head", pruned)):
        got = forward(extractor, x)
        assert_same(variant, f"features_only maps {label}", got, expected)
        if extractor.feature_info != model.feature_info.select(indices):
            raise fail(variant, f"features_only feature_info {label} is {extractor.feature_info}")
    assert_logits(variant, forward(full.model, x), BATCH, model.num_classes, "unpruned backbone")
    head_params = sum(p.numel() for p in pruned.model.get_classifier().parameters())
    if head_params:
        raise fail(variant, f"the pruned backbone still has a {head_params}-parameter classifier")
    if sum(p.numel() for p in pruned.parameters()) > sum(p.numel() for p in model.parameters()):
        raise fail(variant, "pruning added parameters")


def check_feature_indices_refused(variant: Variant) -> None:
    """Out-of-range and repeated layer indices are a ValueError naming what is allowed; an int
    n means the last n layers and negative indices count from the end."""
    model = variant.build()
    n = _feature_layer_count(variant, model)
    x = example_input(model, 1)
    for bad in ([n], [-n - 1], [0, 0], [n - 1, -1], [], 0, n + 1):
        try:
            with torch.no_grad():
                model.forward_intermediates(x, indices=bad, intermediates_only=True)
        except ValueError:
            continue
        raise fail(variant, f"forward_intermediates(indices={bad!r}) with {n} layers was accepted")
    try:
        model.prune_intermediate_layers([n])
    except ValueError:
        pass
    else:
        raise fail(variant, f"prune_intermediate_layers([{n}]) with {n} layers was accepted")
    with torch.no_grad():
        last_n = model.forward_intermediates(x, indices=n, intermediates_only=True)
        last = model.forward_intermediates(x, indices=[-1], intermediates_only=True)
    if len(last_n) != n:
        raise fail(variant, f"indices={n} (the last {n} layers) gave {len(last_n)} maps")
    assert_same(variant, "indices=[-1] vs the last of all maps", last, last_n[-1:])


def feature_checks_for(variant: Variant) -> Iterator[Check]:
    """The feature checks ``variant`` gets, in the order the model checks yield them."""
    yield check_forward_intermediates
    if variant.kind in BACKBONE_CHECK_KINDS:
        yield check_feature_maps_at_two_sizes
        yield check_features_only
        yield check_feature_indices_refused
