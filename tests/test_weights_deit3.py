"""DeiT III computes timm's ``deit3_*`` and the official ``models_v2`` function.

Fixtures (``tools/reference_fixtures/timm_deit3_aimv2.py``): timm's tiny model at its own size
and at a second, non-square one (timm's dynamic_img_size and set_input_size, bicubic
antialiased), the official model at its own size (its code does not resample). The vitzoo
model is the preset shrunk to the fixture's size, so the preset's own options are tested.
"""

from __future__ import annotations

import pytest
import torch
from fidelity import assert_matches_fixture
from reference_data import load_reference, max_abs_diff
from resampling_helpers import at_two_sizes, tiny_preset

from vitzoo.weights import load_state_dict


def converted(name: str, source: str, **overrides):
    fixture = load_reference(name)
    model = tiny_preset("deit3-s", fixture.meta, **overrides)
    load_state_dict(model, fixture.state_dict, source=source)
    return model, fixture


def test_timm_deit3_at_its_size_and_resampled() -> None:
    model, fixture = converted("timm-deit3", "timm")
    assert_matches_fixture(model, fixture, at_two_sizes(tuple(fixture.meta["second_size"])))


def test_official_deit3() -> None:
    model, fixture = converted("official-deit3", "official")
    assert_matches_fixture(model, fixture)


@pytest.mark.parametrize(
    "changed",
    [{"model.posenc.include_prefix": True}, {"model.block.layer_scale": None}],
    ids=["class-token-position", "no-layer-scale"],
)
def test_each_deit3_option_is_needed(changed: dict) -> None:
    """A table row for the class token, or blocks without LayerScale, are another model: the
    weights do not even load (strict accounting names the tensor)."""
    from vitzoo.errors import WeightsError

    with pytest.raises(WeightsError, match="pos_embed|gamma"):
        converted("timm-deit3", "timm", **changed)


def test_timm_deit3_resamples_with_antialias() -> None:
    fixture = load_reference("timm-deit3")
    model = tiny_preset("deit3-s", fixture.meta, **{"model.posenc.antialias": False})
    load_state_dict(model, fixture.state_dict, source="timm")
    size = tuple(fixture.meta["second_size"])
    with torch.no_grad():
        out = model(fixture.input[..., : size[0], : size[1]])
    assert max_abs_diff(out, fixture.outputs["output.1"]) > 1e-3


def test_a_saved_official_checkpoint_loads_through_build_weights(tmp_path) -> None:
    """The release's file (state dict under "model", as deit_3_*.pth holds it), format and
    converter detected."""
    import vitzoo

    fixture = load_reference("official-deit3")
    path = tmp_path / "deit_3_small_224_1k.pth"
    torch.save({"model": fixture.state_dict}, path)
    spec = tiny_preset("deit3-s", fixture.meta).vitzoo_spec
    model = vitzoo.build(spec, weights=str(path)).eval()
    assert_matches_fixture(model, fixture)
