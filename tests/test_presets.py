"""Every shipped preset builds and matches its paper's parameter count within 1%, on the meta
device (no memory is allocated, no weights are initialised: only shapes matter here)."""

from __future__ import annotations

import pytest
import torch

import vitzoo
from vitzoo.flops import count_macs

PRESETS = vitzoo.get_registry().names("preset")
#: Presets whose paper states multiply-accumulates (``macs:`` in the catalogue): all small.
WITH_MACS = [n for n in PRESETS if vitzoo.get_registry().get("preset", n).expected_macs]


def preset_param_count(name: str) -> int:
    """The model's parameters; for an objective preset (MAE), the objective's trainable ones
    (encoder + decoder), which is what the pre-training papers and codes count."""
    with torch.device("meta"):
        model = vitzoo.build(name)
        if model.vitzoo_spec.objective is None:
            return sum(p.numel() for p in model.parameters())
        objective = vitzoo.build_objective(model.vitzoo_spec, model)
        return sum(p.numel() for p in objective.trainable_parameters())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parameter_count_matches_paper(name: str) -> None:
    entry = vitzoo.get_registry().get("preset", name)
    assert entry.citation, f"{name}: cite the paper"
    assert entry.expected_params, f"{name}: give the published parameter count"
    count = preset_param_count(name)
    assert abs(count - entry.expected_params) / entry.expected_params <= 0.01, (
        f"{name}: {count:,} parameters vs {entry.expected_params:,} published"
    )


def test_vit_b16_is_86_6m() -> None:
    with torch.device("meta"):
        model = vitzoo.build("vit-b16")
    assert f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M" == "86.6M"


def test_some_presets_state_their_macs() -> None:
    assert len(WITH_MACS) >= 5, WITH_MACS


@pytest.mark.parametrize("name", WITH_MACS)
def test_preset_macs_match_paper(name: str) -> None:
    """Counted by torch's FlopCounterMode at the preset's input size, within 5% of the paper."""
    entry = vitzoo.get_registry().get("preset", name)
    with torch.device("meta"):
        macs = count_macs(vitzoo.build(name))
    assert abs(macs - entry.expected_macs) / entry.expected_macs <= 0.05, (
        f"{name}: {macs / 1e9:.3f} GMACs counted vs {entry.expected_macs / 1e9:.3f} published"
    )
