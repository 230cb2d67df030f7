"""EVA-02 (issue 21): timm's Eva computes the same function in vitzoo's ``eva02``.

Fixtures (``tools/reference_fixtures/timm_eva.py``) hold timm's own tiny models -- the fused
layout of Ti/S, the separate q/k/v and SwiGLU halves (with sub-LN) of B/L, the "rotate half"
RoPE layout, and a model moved to another size by timm's ``set_input_size`` -- with every tensor
perturbed; the converter maps them strictly and the outputs agree by ``fidelity``'s rule. The
full-size released layouts map onto the presets through the presets' timm aliases.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from family_checks import (
    alias_layout_cases,
    assert_moves_output,
    assert_release_maps_onto_preset,
    exact_parameter_count,
)
from fidelity import assert_matches_fixture
from reference_data import load_reference

import vitzoo
from vitzoo.weights import converters_for, load_state_dict

FIXTURES = ["timm-eva02-fused", "timm-eva02-unfused", "timm-eva02-rotate-half"]
PRESETS = [n for n in vitzoo.get_registry().names("preset") if n.startswith("eva02-")]


def eva_spec(meta: dict[str, Any], **attention: Any) -> dict[str, Any]:
    """The vitzoo spec of a fixture's timm constructor arguments (EVA-02's RoPE written out,
    so the test says what the preset defaults mean)."""
    mlp: dict[str, Any] = {
        "type": "swiglu",
        "hidden_dim": int(meta["embed_dim"] * meta["mlp_ratio"]),
    }
    if meta.get("mlp_norm"):
        mlp["norm"] = "layernorm"
    model: dict[str, Any] = {
        "type": "eva02",
        "image_size": list(meta["img_size"]),
        "num_classes": meta["num_classes"],
        "dim": meta["embed_dim"],
        "depth": meta["depth"],
        "num_heads": meta["num_heads"],
        "patch": {"type": "linear", "patch_size": meta["patch_size"]},
        "mlp": mlp,
        "attention": {
            "type": "rope",
            "theta": 10000.0,
            "axis_order": "y-first",
            "ref_grid": list(meta["ref_feat_shape"]),
            "key_bias": False,
            "pairs": "halves" if meta.get("rope_rotate_half") else "adjacent",
            **attention,
        },
    }
    if meta.get("use_abs_pos_emb") is False:
        model["posenc"] = {"type": "none"}
    return {"model": model}


def converted(name: str, **attention: Any) -> tuple[torch.nn.Module, Any]:
    fixture = load_reference(name)
    model = vitzoo.build(eva_spec(fixture.meta, **attention)).eval()
    load_state_dict(model, fixture.state_dict, source="timm")
    return model, fixture


@pytest.mark.parametrize("name", FIXTURES)
def test_eva02_computes_timms_function(name: str) -> None:
    model, fixture = converted(name)
    assert_matches_fixture(model, fixture)


def test_the_rope_follows_timms_set_input_size() -> None:
    """Built at 32 x 24 px, moved to 48 x 40 px: the rotation of the new grid, its coordinates
    rescaled to the same reference grid, as timm's ``Eva.set_input_size`` makes it."""
    fixture = load_reference("timm-eva02-rope-resized")
    model = vitzoo.build(eva_spec(fixture.meta)).eval()
    load_state_dict(model, fixture.state_dict, source="timm")
    model.set_input_size(tuple(fixture.meta["resized_to"]))
    assert model.blocks[0].attn.rope.grid == (12, 10)
    assert_matches_fixture(model, fixture)


def test_the_eva02_defaults_are_the_fixtures_rope() -> None:
    """The architecture's default attention is EVA-02's RoPE as written out above, with the
    released models' 16 x 16 reference grid."""
    meta = load_reference("timm-eva02-unfused").meta
    spec = eva_spec(meta)
    del spec["model"]["attention"]
    defaults = vitzoo.build(spec).vitzoo_spec.model.attention
    written = vitzoo.build(eva_spec(meta, ref_grid=[16, 16])).vitzoo_spec.model.attention
    assert defaults == written


@pytest.mark.parametrize(
    "planted",
    [{"axis_order": "x-first"}, {"pairs": "halves"}, {"ref_grid": None}, {"theta": 100.0}],
    ids=["x-first", "halves", "no-ref-grid", "theta-100"],
)
def test_each_rope_option_is_needed_for_the_released_function(planted: dict[str, Any]) -> None:
    """Every layout choice of EVA-02's RoPE changes the output by far more than the rule
    allows: none is a no-op, and the fixture's noise is large enough to see each."""
    model, fixture = converted("timm-eva02-fused", **planted)
    with torch.no_grad():
        assert_moves_output(model(fixture.input), fixture)


def test_swapped_queries_and_keys_or_swiglu_halves_are_caught() -> None:
    """The converter's concatenation orders matter: q/k swapped, or the SwiGLU gate and linear
    halves swapped, compute something else."""
    model, fixture = converted("timm-eva02-unfused")
    for swap in ("qk", "swiglu"):
        broken = vitzoo.build(eva_spec(fixture.meta)).eval()
        broken.load_state_dict(model.state_dict())
        with torch.no_grad():
            if swap == "qk":
                qkv = broken.blocks[0].attn.qkv.weight
                q, k, v = qkv.clone().chunk(3)
                qkv.copy_(torch.cat((k, q, v)))
            else:
                fc1 = broken.blocks[0].mlp.fc1
                for tensor in (fc1.weight, fc1.bias):
                    gate, linear = tensor.clone().chunk(2)
                    tensor.copy_(torch.cat((linear, gate)))
            assert_moves_output(broken(fixture.input), fixture)


def test_the_timm_converter_reads_both_layouts_and_only_eva() -> None:
    """Both EVA-02 layouts are recognised by the EVA converter and by no other family's
    (timm's loose ViT detector aside, see test_weights_timm); a BEiT checkpoint is not EVA."""
    fused, unfused, beit = (load_reference(n).state_dict for n in FIXTURES[:2] + ["timm-beit"])
    (converter,) = converters_for("eva02", "timm")
    assert converter.recognises(fused, {}) and converter.recognises(unfused, {})
    assert not converter.recognises(beit, {})
    for other in converters_for(source="timm"):
        if other.name not in {converter.name, "timm-vit"}:
            assert not other.recognises(unfused, {}), other.name


def test_a_saved_timm_checkpoint_loads_through_build_weights(tmp_path) -> None:
    from safetensors.torch import save_file

    fixture = load_reference("timm-eva02-unfused")
    path = tmp_path / "eva02.safetensors"
    save_file({k: v.contiguous() for k, v in fixture.state_dict.items()}, str(path))
    model = vitzoo.build(eva_spec(fixture.meta), weights=str(path)).eval()
    assert_matches_fixture(model, fixture, dtypes=(torch.float32,))


@pytest.mark.parametrize(("preset", "released"), alias_layout_cases("eva"))
def test_full_size_release_maps_onto_its_preset(preset: str, released: str) -> None:
    assert_release_maps_onto_preset(preset, released)


def test_every_eva02_release_has_a_layout() -> None:
    assert len(alias_layout_cases("eva")) == len(PRESETS) == 8


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_has_the_exact_reference_count(preset: str) -> None:
    counted, expected = exact_parameter_count(preset)
    assert counted == expected
