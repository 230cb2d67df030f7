"""Every shipped preset builds and matches its paper's parameter count within 1%."""

from __future__ import annotations

import pytest
import torch

import vitzoo

PRESETS = vitzoo.get_registry().names("preset")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parameter_count_matches_paper(name: str) -> None:
    entry = vitzoo.get_registry().get("preset", name)
    assert entry.citation, f"{name}: cite the paper"
    assert entry.expected_params, f"{name}: give the published parameter count"
    with torch.device("meta"):  # no memory, no init cost: only shapes matter here
        model = vitzoo.build(name)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - entry.expected_params) / entry.expected_params <= 0.01, (
        f"{name}: {count:,} parameters vs {entry.expected_params:,} published"
    )


def test_vit_b16_is_86_6m() -> None:
    with torch.device("meta"):
        model = vitzoo.build("vit-b16")
    assert f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M" == "86.6M"
