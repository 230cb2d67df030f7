"""Shared by the backbone-family fidelity tests (DINOv2, DeiT III, AIMv2): a preset shrunk to a
reference fixture's tiny size, and the outputs at a second input size.

The fixtures (``tools/reference_fixtures/_resized.py``) record the reference's output at its own
size and at the input cropped to a second size, resampled the reference's own way. Here the
vitzoo side produces the same outputs two ways: the built model run on the smaller input (its
learned table resampled per call), and a copy rebuilt with ``set_input_size`` (the table
resampled once) -- the two must agree with the reference alike.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

import vitzoo
from vitzoo.spec import set_path, spec_to_dict
from vitzoo.spec.sources import validate_source


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The fixtures' second input: the top-left ``size`` of ``x``."""
    return x[..., : size[0], : size[1]]


def tiny_preset(preset: str, meta: dict[str, Any], **overrides: Any) -> nn.Module:
    """``preset`` with the fixture's tiny sizes (timm's keyword names), in eval mode: every
    other setting -- positions, their resampling, LayerScale, norms, MLP -- is the preset's.

    Overrides apply to the preset's resolved spec (its architecture's defaults filled in), so
    ``model.posenc.antialias`` changes one field of the posenc the preset has."""
    sizes = {
        "model.image_size": meta["img_size"],
        "model.dim": meta["embed_dim"],
        "model.depth": meta["depth"],
        "model.num_heads": meta["num_heads"],
        "model.num_classes": meta.get("num_classes", 0),
        "model.patch.patch_size": meta["patch_size"],
    }
    spec, _ = validate_source(preset, vitzoo.get_registry())
    data = spec_to_dict(spec)
    for key, value in (sizes | overrides).items():
        data = set_path(data, key if "." in key else f"model.{key}", value)
    return vitzoo.build(data).eval()


def at_two_sizes(size: tuple[int, int], *, resized_copy: bool = True):
    """A ``forward`` for :func:`fidelity.assert_matches_fixture`: ``output.0`` at the input's
    size, ``output.1`` on the cropped input, ``output.2`` from a copy rebuilt by
    ``set_input_size(size)`` (left out with ``resized_copy=False``)."""

    def forward(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        small = crop(x, size)
        out = {"output.0": model(x), "output.1": model(small)}
        if resized_copy:
            other = copy.deepcopy(model)
            other.set_input_size(size)
            out["output.2"] = other(small)
        return out

    return forward


def tokens_at_two_sizes(size: tuple[int, int]):
    """Like :func:`at_two_sizes` for references that return (class token, patch tokens): the
    normalised class token and the patch tokens (every prefix token left out), at the input's
    size then on the cropped input."""

    def forward(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for i, inputs in enumerate((x, crop(x, size))):
            tokens = model.forward_features(inputs)
            out[f"output.{2 * i}"] = model.forward_head(tokens)
            out[f"output.{2 * i + 1}"] = tokens[:, model.num_prefix_tokens :]
        return out

    return forward
