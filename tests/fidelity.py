"""The one rule for "vitzoo computes the reference's function", used by every fidelity test.

The rule (the house brief's): in float64, vitzoo's output is within 1e-9 of the reference's;
in float32, within 1e-5 x max(1, max|reference|).

Why both, and why relative in float32: float32 rounding differs between CPUs for the same
function (an AVX2 CPU gives 6.1e-5 on MobileViT logits of ~200 where an AVX-512 one gives 0;
1.1e-5 on CrossViT tokens of ~41), so an absolute 1e-5 fails on some machines, and any
absolute float32 tolerance loose enough for every scale would hide small structural bugs on
small outputs. The float64 run of the same (float32-valued) weights and input is reproducible
to ~1e-14 on any CPU, so 1e-9 there is robust and about four orders of magnitude sharper than
float32 allows: it sees a LayerNorm eps of 1e-5 instead of 1e-6, which float32 cannot
(``tests/test_fidelity_catches_bugs.py`` plants such bugs and proves this module fails on them).
The float32 comparison stays because it is the precision users run, through other kernels
(fused attention, oneDNN convolutions) than float64's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from reference_data import ReferenceFixture
from torch import nn

FLOAT64_TOLERANCE = 1e-9
FLOAT32_RELATIVE_TOLERANCE = 1e-5

#: A model's outputs: one tensor (named ``output``) or tensors by the fixture's output names.
Outputs = torch.Tensor | dict[str, torch.Tensor]
#: How to run a model on an input (``module(x)`` unless the test needs a head, tokens ...).
Forward = Callable[[nn.Module, torch.Tensor], Outputs]


def call(module: nn.Module, x: torch.Tensor) -> Outputs:
    return module(x)


def tolerance(expected: torch.Tensor) -> float:
    """How far vitzoo may be from ``expected``, by its dtype (and, in float32, its scale)."""
    if expected.dtype == torch.float64:
        return FLOAT64_TOLERANCE
    if expected.dtype == torch.float32:
        return FLOAT32_RELATIVE_TOLERANCE * max(1.0, expected.abs().max().item())
    raise TypeError(f"no fidelity rule for {expected.dtype} (float32 or float64 only)")


def assert_matches_reference(
    actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype, label: str = "output"
) -> float:
    """Fail unless ``actual`` (vitzoo) is ``expected`` (the reference) by the rule; returns the
    max abs diff. ``dtype`` is the precision both sides must have run in: a float32 output can
    never pass as a float64 comparison."""
    assert actual.dtype == dtype, f"{label}: vitzoo's output is {actual.dtype}, not {dtype}"
    assert expected.dtype == dtype, f"{label}: the reference is {expected.dtype}, not {dtype}"
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    diff = (actual.detach() - expected).abs().max().item()
    limit = tolerance(expected)
    # Written so that NaN fails (every comparison with NaN is False).
    assert diff <= limit, (
        f"{label}: max abs diff {diff:.3g} > {limit:.3g} in {dtype} "
        f"(max |reference| {expected.abs().max().item():.3g})"
    )
    return diff


def run_in(
    module: nn.Module, x: torch.Tensor, dtype: torch.dtype, forward: Forward = call
) -> dict[str, torch.Tensor]:
    """``forward(module, x)`` in ``dtype``, outputs by name. float64 runs a copy (the float32
    weights upcast exactly, the caller's module untouched) as a user runs a float64 model, and
    as the fixture generator ran the reference (``tools/reference_fixtures/__init__.py``)."""
    model = module if dtype == torch.float32 else copy.deepcopy(module).to(dtype)
    with torch.no_grad():
        out = forward(model, x.to(dtype))
    return {"output": out} if isinstance(out, torch.Tensor) else dict(out)


def _compare(
    actual: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    dtype: torch.dtype,
    label: str,
) -> dict[str, float]:
    assert actual.keys() == expected.keys(), (
        f"{label}: outputs {sorted(actual)} != {sorted(expected)}"
    )
    precision = str(dtype).removeprefix("torch.")
    return {
        f"{name} {precision}": assert_matches_reference(
            actual[name], expected[name], dtype=dtype, label=f"{label} {name}"
        )
        for name in expected
    }


def _report(label: str, diffs: dict[str, float]) -> dict[str, float]:
    print(f"{label}: max abs diff " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
    return diffs


def assert_matches_fixture(
    module: nn.Module,
    fixture: ReferenceFixture,
    forward: Forward = call,
    *,
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64),
) -> dict[str, float]:
    """``module`` (vitzoo, the fixture's weights loaded) computes the fixture's function: its
    float32 outputs and, where the reference ran in float64, its float64 ones, each by the rule
    (``dtypes`` narrows the check to one precision). Returns the max abs diffs by output and
    precision (also printed, for ``pytest -s``)."""
    diffs: dict[str, float] = {}
    for dtype, expected in ((torch.float32, fixture.outputs), (torch.float64, fixture.outputs64)):
        if expected and dtype in dtypes:
            actual = run_in(module, fixture.input, dtype, forward)
            diffs |= _compare(actual, expected, dtype, fixture.name)
    return _report(fixture.name, diffs)


def assert_same_function(
    ours: nn.Module,
    theirs: nn.Module,
    x: torch.Tensor,
    *,
    forward_ours: Forward = call,
    forward_theirs: Forward = call,
    label: str,
) -> dict[str, float]:
    """Both models run here (transformers imports in the test env): compared in float32 and in
    float64, each by the rule. Returns the max abs diffs (also printed)."""
    diffs: dict[str, float] = {}
    for dtype in (torch.float32, torch.float64):
        expected = run_in(theirs, x, dtype, forward_theirs)
        diffs |= _compare(run_in(ours, x, dtype, forward_ours), expected, dtype, label)
    return _report(label, diffs)
