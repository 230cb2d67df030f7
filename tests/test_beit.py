"""BEiT / BEiT v2 (issue 22): timm's Beit computes the same function in vitzoo's ``beit``, and
``set_input_size`` resamples the relative-position tables as timm does.

Fixtures (``tools/reference_fixtures/timm_beit.py``) of timm's own tiny Beit, every tensor
perturbed, at its built size and moved to another by timm's ``set_input_size``. Hugging Face's
``Beit*``: tests/test_beit_hf.py.
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
from fidelity import assert_matches_fixture, assert_matches_reference
from reference_data import load_reference

import vitzoo
from vitzoo.weights import converters_for, load_state_dict

PRESETS = [n for n in vitzoo.get_registry().names("preset") if n.startswith("beit")]
TABLE = "attn.relative_position.relative_position_bias_table"
PREFIX = "attn.relative_position.prefix_bias"


def beit_spec(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {
            "type": "beit",
            "image_size": list(meta["img_size"]),
            "num_classes": meta["num_classes"],
            "dim": meta["embed_dim"],
            "depth": meta["depth"],
            "num_heads": meta["num_heads"],
            "patch": {"type": "linear", "patch_size": meta["patch_size"]},
            "mlp": {"type": "mlp", "ratio": meta["mlp_ratio"]},
            "block": {"type": "pre-norm", "layer_scale": meta["init_values"]},
        }
    }


def converted(name: str = "timm-beit") -> tuple[torch.nn.Module, Any]:
    fixture = load_reference(name)
    model = vitzoo.build(beit_spec(fixture.meta)).eval()
    load_state_dict(model, fixture.state_dict, source="timm")
    return model, fixture


# -- timm ---------------------------------------------------------------------------------------
def test_beit_computes_timms_function() -> None:
    model, fixture = converted()
    assert_matches_fixture(model, fixture)


def test_set_input_size_resamples_the_tables_as_timm_does() -> None:
    """3 x 4 -> 5 x 6 patch grid: each block's table is timm's ``resize_rel_pos_bias_table``
    result (geometric source offsets, bilinear), the class-token entries are kept, and the
    moved model computes timm's moved model's function."""
    model, before = converted()
    moved = load_reference("timm-beit-resized")
    # the two fixtures hold the same weights before the move
    for key in ("patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "head.weight"):
        assert torch.equal(before.state_dict[key], moved.state_dict[key])
    model.set_input_size(tuple(moved.meta["resized_to"]))
    ours = model.state_dict()
    for block in range(moved.meta["depth"]):
        table = torch.cat((ours[f"blocks.{block}.{TABLE}"], ours[f"blocks.{block}.{PREFIX}"]))
        theirs = moved.state_dict[f"blocks.{block}.attn.relative_position_bias_table"]
        diff = assert_matches_reference(
            table, theirs, dtype=torch.float32, label=f"block {block} table"
        )
        print(f"block {block}: resampled table max abs diff {diff:.3g}")
    assert_matches_fixture(model, moved)


def test_a_plain_bicubic_resampling_would_be_caught() -> None:
    """The fixture tells resampling schemes apart: the Swin-style bicubic resize of the same
    tables computes something else at the new size."""
    from vitzoo.components.resample import resize_relative_position_table

    model, before = converted()
    moved = load_reference("timm-beit-resized")
    model.set_input_size(tuple(moved.meta["resized_to"]))
    old_grid = (before.meta["img_size"][0] // 8, before.meta["img_size"][1] // 8)
    with torch.no_grad():
        for block in range(before.meta["depth"]):
            rel = model.blocks[block].attn.relative_position
            source = before.state_dict[f"blocks.{block}.attn.relative_position_bias_table"][:-3]
            rel.relative_position_bias_table.copy_(
                resize_relative_position_table(source, old_grid, rel.grid)
            )
        assert_moves_output(model(moved.input), moved)


@pytest.mark.parametrize("planted", ["class-entries", "mirrored-offsets"])
def test_the_table_layout_is_caught(planted: str) -> None:
    """Swapping the class -> patch and patch -> class entries, or reading the row offsets with
    the other sign (key - query), computes something else: the index is BEiT's, not merely
    a bias."""
    model, fixture = converted()
    rel = model.blocks[0].attn.relative_position
    with torch.no_grad():
        if planted == "class-entries":
            rel.prefix_bias.copy_(rel.prefix_bias[[1, 0, 2]])
        else:
            h, w = rel.grid
            table = rel.relative_position_bias_table
            grid = table.reshape(2 * h - 1, 2 * w - 1, -1)
            table.copy_(grid.flip(0).reshape_as(table))
        assert_moves_output(model(fixture.input), fixture)


def test_the_official_layout_with_index_buffers_loads() -> None:
    """microsoft/unilm checkpoints carry the derived ``relative_position_index`` buffers:
    declared unused, everything else as timm's."""
    fixture = load_reference("timm-beit")
    official = dict(fixture.state_dict)
    n = (fixture.meta["img_size"][0] // 8) * (fixture.meta["img_size"][1] // 8) + 1
    for block in range(fixture.meta["depth"]):
        official[f"blocks.{block}.attn.relative_position_index"] = torch.zeros(n, n).long()
    model = vitzoo.build(beit_spec(fixture.meta)).eval()
    conversion = load_state_dict(model, official, source="timm")
    assert sorted(conversion.unused) == [
        f"blocks.{b}.attn.relative_position_index" for b in range(fixture.meta["depth"])
    ]
    assert_matches_fixture(model, fixture, dtypes=(torch.float32,))


def test_only_the_beit_converter_recognises_a_beit_checkpoint() -> None:
    state = load_reference("timm-beit").state_dict
    recognising = {c.name for c in converters_for(source="timm") if c.recognises(state, {})} - {
        "timm-vit"
    }  # timm's ViT detector is loose by design (see test_weights_timm)
    assert recognising == {"timm-beit"}


@pytest.mark.parametrize(("preset", "released"), alias_layout_cases("beit"))
def test_full_size_release_maps_onto_its_preset(preset: str, released: str) -> None:
    assert_release_maps_onto_preset(preset, released)


def test_every_beit_release_has_a_layout() -> None:
    assert len(alias_layout_cases("beit")) == len(PRESETS) == 7


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_has_the_exact_reference_count(preset: str) -> None:
    counted, expected = exact_parameter_count(preset)
    assert counted == expected
