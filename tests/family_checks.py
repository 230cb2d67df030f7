"""Checks every family test makes, written once: released layouts onto presets by the preset's
own timm aliases, exact parameter counts, and "a planted change computes something else".

The catalogue's ``aliases`` are the one home of timm names, so the full-size layouts
(``tests/data/reference/layouts.json.gz``, written by ``tools/make_reference_layouts.py``) are
matched to presets through them rather than through converter ``equivalents``.
"""

from __future__ import annotations

import gzip
import json
from functools import cache

import torch
from fidelity import tolerance
from reference_data import FIXTURE_DIR, ReferenceFixture

import vitzoo
from vitzoo.weights import converters_for
from vitzoo.weights.converter import raise_for_problems, target_shapes


@cache
def released_layouts() -> dict[str, dict[str, dict[str, list[int]]]]:
    """Full-size state-dict layouts (key -> shape) by source kind, then released model name."""
    return json.loads(gzip.decompress((FIXTURE_DIR / "layouts.json.gz").read_bytes()))


def alias_layout_cases(plugin: str, source: str = "timm") -> list[tuple[str, str]]:
    """(preset, released name) for every preset of ``plugin`` whose alias has a stored layout."""
    registry = vitzoo.get_registry()
    layouts = released_layouts()[source]
    return sorted(
        (name, alias)
        for name in registry.names("preset")
        if registry.get("preset", name).plugin == plugin
        for alias in registry.get("preset", name).aliases
        if alias in layouts
    )


def assert_release_maps_onto_preset(preset: str, released: str, source: str = "timm") -> None:
    """Every tensor of the released checkpoint lands on the preset, names and shapes, through
    the converter that recognises it among the preset architecture's own (meta device)."""
    layout = released_layouts()[source][released]
    with torch.device("meta"):
        model = vitzoo.build(preset)
        tensors = {k: torch.empty(shape) for k, shape in layout.items()}
    own = converters_for(model.vitzoo_spec.model.type, source)
    recognising = [c for c in own if c.recognises(tensors, {})]
    assert len(recognising) == 1, f"{released}: recognised by {[c.name for c in recognising]}"
    shapes = target_shapes(model)
    conversion = recognising[0].convert(tensors, shapes)
    raise_for_problems(conversion, shapes, f"{released} -> {preset}")


def exact_parameter_count(preset: str) -> tuple[int, int]:
    """(counted on the meta device, the catalogue's ``params``) of a preset."""
    with torch.device("meta"):
        model = vitzoo.build(preset)
    expected = vitzoo.get_registry().get("preset", preset).expected_params
    return sum(p.numel() for p in model.parameters()), expected


def assert_moves_output(
    output: torch.Tensor, fixture: ReferenceFixture, factor: float = 100.0
) -> float:
    """A planted change is visible: the float32 output is off by far more than the fidelity
    rule allows (``factor`` times), so the fixture's noise is large enough to catch it."""
    diff = (output.detach().float() - fixture.output).abs().max().item()
    limit = tolerance(fixture.output)
    assert diff > factor * limit, (
        f"{fixture.name}: the planted change moved the output by only {diff:.3g}"
    )
    print(f"{fixture.name}: a planted change moves the output by {diff:.3g} (rule: {limit:.3g})")
    return diff
