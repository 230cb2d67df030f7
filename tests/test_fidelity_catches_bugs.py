"""The fidelity rule (``fidelity.py``) still catches bugs, though float32 is now relative to scale.

Each case takes a faithful conversion of a reference fixture, checks it passes, plants one
off-by-one a converter or a block could really make (q and k swapped, a norm dropped, a kernel
transposed, another LayerNorm eps) and requires the shared helper to FAIL on it, in each
precision where it can: structural bugs in float32 and float64 alone, the eps in float64 (float32
sees it at 0.02x to 0.4x its tolerance, measured; that is what the float64 fixtures are for).
The rule's own arithmetic (scale, dtype, NaN) is tested on plain tensors at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from fidelity import Forward, assert_matches_fixture, assert_matches_reference, call
from reference_data import ReferenceFixture, load_reference
from test_weights_released_functions import converted as converted_spec
from test_weights_released_functions import crossvit_spec
from test_weights_timm import converted
from torch import nn
from vitzoo_plugins.crossvit import MultiConvPatchEmbed


def swap_q_and_k(qkv: nn.Linear) -> None:
    """A fused (q, k, v) projection read as (k, q, v): every attention map transposed."""
    dim = qkv.out_features // 3
    with torch.no_grad():
        for tensor in (qkv.weight, qkv.bias):
            q, k = tensor[:dim].clone(), tensor[dim : 2 * dim].clone()
            tensor[:dim], tensor[dim : 2 * dim] = k, q


def transpose_kernel(conv: nn.Conv2d) -> None:
    """A kernel's height and width swapped (an (H, W) vs (W, H) layout slip)."""
    with torch.no_grad():
        conv.weight.copy_(conv.weight.transpose(-1, -2).clone())


def drop(model: nn.Module, name: str) -> None:
    """The submodule ``name`` (a norm) replaced by the identity."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, nn.Identity())


def set_layer_norm_eps(model: nn.Module, eps: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps


def tokens(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)[0]


def converted_fixture(name: str) -> tuple[nn.Module, ReferenceFixture, Forward]:
    """A faithful vitzoo conversion of fixture ``name``, as its fidelity test makes it."""
    if name == "timm-crossvit":
        fixture = load_reference(name)
        return converted_spec(crossvit_spec(fixture.meta), fixture.state_dict), fixture, call
    if name.startswith("timm-crossvit-multi-conv-"):
        fixture = load_reference(name)
        embed = MultiConvPatchEmbed(3, fixture.meta["embed_dim"], fixture.meta["patch_size"])
        embed.load_state_dict(fixture.state_dict)
        return embed.eval(), fixture, tokens
    model, fixture = converted(name)
    return model, fixture, call


#: case -> (fixture, the planted bug)
STRUCTURAL: dict[str, tuple[str, Callable[[nn.Module], None]]] = {
    "vit q-k swapped in block 0": ("timm-vit", lambda m: swap_q_and_k(m.blocks[0].attn.qkv)),
    "vit block 0 norm1 dropped": ("timm-vit", lambda m: drop(m, "blocks.0.norm1")),
    "vit patch kernel transposed": ("timm-vit", lambda m: transpose_kernel(m.patch.proj)),
    "mobilevit depthwise 3x3 transposed": (
        "timm-mobilevit",
        lambda m: transpose_kernel(m.stages[0][0].depthwise[0]),
    ),
    "mobilevit stem batchnorm dropped": ("timm-mobilevit", lambda m: drop(m, "stem.1")),
    "mobilevit q-k swapped": (
        "timm-mobilevit",
        lambda m: swap_q_and_k(m.stages[2][1].blocks[0].attn.qkv),
    ),
    "crossvit q-k swapped in the small branch": (
        "timm-crossvit",
        lambda m: swap_q_and_k(m.stages[0].branches[0][0].attn.qkv),
    ),
    "crossvit fusion norm dropped": (
        "timm-crossvit",
        lambda m: drop(m, "stages.0.fusions.0.revert.0"),
    ),
    "crossvit multi-conv 7x7 transposed": (
        "timm-crossvit-multi-conv-12",
        lambda m: transpose_kernel(m.proj[0]),
    ),
}


def assert_caught(
    model: nn.Module, fixture: ReferenceFixture, forward: Forward, dtype: torch.dtype
) -> None:
    precision = str(dtype).removeprefix("torch.")
    with pytest.raises(AssertionError, match=f"max abs diff .* in torch.{precision}"):
        assert_matches_fixture(model, fixture, forward, dtypes=(dtype,))


@pytest.mark.parametrize("case", sorted(STRUCTURAL))
def test_a_planted_structural_bug_fails_the_rule_in_each_precision(case: str) -> None:
    name, plant = STRUCTURAL[case]
    model, fixture, forward = converted_fixture(name)
    assert_matches_fixture(model, fixture, forward)  # the faithful conversion passes
    plant(model)
    for dtype in (torch.float32, torch.float64):
        assert_caught(model, fixture, forward, dtype)


@pytest.mark.parametrize(("name", "eps"), [("timm-vit", 1e-5), ("timm-mobilevit", 1e-6)])
def test_a_wrong_layer_norm_eps_fails_the_float64_rule(name: str, eps: float) -> None:
    """timm's ViT uses 1e-6, MobileViT's transformer 1e-5: the other value moves the output by
    less than float32 can see, and by 10^3 to 10^4 times the float64 tolerance."""
    model, fixture, forward = converted_fixture(name)
    assert all(m.eps != eps for m in model.modules() if isinstance(m, nn.LayerNorm))
    set_layer_norm_eps(model, eps)
    assert_caught(model, fixture, forward, torch.float64)


# -- the rule itself -------------------------------------------------------------------------
def test_float32_tolerance_scales_with_the_output() -> None:
    """The AVX2 figure (6.1e-5 on logits of ~200) passes; the same 6.1e-5 on outputs of ~1 does
    not; on outputs under 1 the tolerance stays 1e-5, not smaller."""
    logits = torch.tensor([203.0, -150.0, 37.9])
    assert_matches_reference(logits + 6.1e-5, logits, dtype=torch.float32)
    with pytest.raises(AssertionError, match="max abs diff"):
        assert_matches_reference(logits / 200 + 6.1e-5, logits / 200, dtype=torch.float32)
    small = torch.tensor([0.01, -0.02])
    assert_matches_reference(small + 9e-6, small, dtype=torch.float32)
    with pytest.raises(AssertionError, match="max abs diff"):
        assert_matches_reference(small + 2e-5, small, dtype=torch.float32)


def test_float64_tolerance_is_absolute_and_dtypes_must_be_the_claimed_ones() -> None:
    ref = torch.tensor([200.0, -1.0], dtype=torch.float64)
    assert_matches_reference(ref + 5e-10, ref, dtype=torch.float64)
    with pytest.raises(AssertionError, match="max abs diff"):
        assert_matches_reference(ref + 2e-9, ref, dtype=torch.float64)
    with pytest.raises(AssertionError, match="not torch.float64"):
        assert_matches_reference(ref.float(), ref, dtype=torch.float64)  # a float32 run
    with pytest.raises(AssertionError, match="max abs diff"):
        assert_matches_reference(torch.full_like(ref, float("nan")), ref, dtype=torch.float64)
