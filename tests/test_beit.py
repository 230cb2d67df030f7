"""BEiT / BEiT v2 (issue 22): timm's Beit and Hugging Face's Beit* compute the same function in
vitzoo's ``beit``, and ``set_input_size`` resamples the relative-position tables as timm does.

timm: fixtures (``tools/reference_fixtures/timm_beit.py``) of timm's own tiny Beit, every tensor
perturbed, at its built size and moved to another by timm's ``set_input_size``. Hugging Face:
tiny random models built here (transformers imports in the test env), perturbed, saved with
``save_pretrained`` and loaded through vitzoo with the spec derived from ``config.json``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from family_checks import (
    alias_layout_cases,
    assert_moves_output,
    assert_release_maps_onto_preset,
    exact_parameter_count,
)
from fidelity import assert_matches_fixture, assert_matches_reference, assert_same_function
from reference_data import load_reference
from weights_helpers import max_abs_diff, perturb_every_tensor

import vitzoo
from vitzoo.errors import WeightsError
from vitzoo.weights import converters_for, load_pretrained, load_state_dict

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


# -- Hugging Face -------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")

SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    num_labels=3,
    use_relative_position_bias=True,
)
#: BEiT's other switches: class-token pooling after a final LayerNorm, no LayerScale, absolute
#: positions beside the bias, a mask token (pre-training only).
OTHER_SWITCHES = dict(
    use_mean_pooling=False,
    layer_scale_init_value=0.0,
    use_absolute_position_embeddings=True,
    use_mask_token=True,
)


def saved(model_cls: str, folder, **config: Any) -> torch.nn.Module:
    torch.manual_seed(0)  # HF's random init, so the figures are the same every run
    model = getattr(transformers, model_cls)(transformers.BeitConfig(**{**SMALL, **config}))
    perturb_every_tensor(model)
    model.eval().save_pretrained(folder)
    return model


@pytest.mark.parametrize("switches", [{}, OTHER_SWITCHES], ids=["fine-tune", "other-switches"])
def test_hf_beit_for_image_classification(tmp_path, switches: dict[str, Any]) -> None:
    hf_model = saved("BeitForImageClassification", tmp_path, **switches)
    loaded = load_pretrained(tmp_path)
    assert loaded.conversion.unmatched_source == [] and loaded.conversion.missing_target == []
    x, other = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        spread = max_abs_diff(hf_model(pixel_values=x).logits, hf_model(pixel_values=other).logits)
    assert spread > 1e-2, "the comparison is vacuous: logits do not depend on the input"
    assert_same_function(
        loaded.model.eval(),
        hf_model,
        x,
        forward_theirs=lambda model, x: model(pixel_values=x).logits,
        label=f"hf BeitForImageClassification ({'other switches' if switches else 'fine-tune'})",
    )


@pytest.mark.parametrize("switches", [{}, OTHER_SWITCHES], ids=["fine-tune", "other-switches"])
def test_hf_bare_beit_model_gives_the_same_tokens_and_pooled_vector(tmp_path, switches) -> None:
    hf_model = saved("BeitModel", tmp_path, **switches)
    loaded = load_pretrained(tmp_path)
    assert loaded.model.num_classes == 0
    x = torch.randn(2, 3, 32, 32)
    assert_same_function(
        loaded.model.eval(),
        hf_model,
        x,
        forward_ours=lambda model, x: {
            "tokens": (tokens := model.forward_features(x)),
            "pooled": model.forward_head(tokens, pre_logits=True),
        },
        forward_theirs=lambda model, x: {
            "tokens": (out := model(pixel_values=x)).last_hidden_state,
            "pooled": out.pooler_output,
        },
        label="hf BeitModel",
    )


def test_hf_in_memory_layout_of_transformers_5_loads() -> None:
    """transformers >= 5 names the tensors differently in memory than in its files (q_proj,
    layers.N ...); a state dict taken from a live model loads too."""
    torch.manual_seed(0)
    hf_model = transformers.BeitForImageClassification(transformers.BeitConfig(**SMALL)).eval()
    perturb_every_tensor(hf_model)
    from vitzoo_plugins.beit_weights import spec_from_hf_beit

    config = json.loads(hf_model.config.to_json_string())
    model = vitzoo.build(spec_from_hf_beit(config)).eval()
    load_state_dict(model, hf_model.state_dict(), source="hf")
    x = torch.randn(2, 3, 32, 32)
    assert_same_function(
        model, hf_model, x, forward_theirs=lambda m, x: m(pixel_values=x).logits, label="hf v5"
    )


def test_hf_shared_table_checkpoints_are_refused_plainly(tmp_path) -> None:
    saved(
        "BeitModel",
        tmp_path,
        use_relative_position_bias=False,
        use_shared_relative_position_bias=True,
    )
    with pytest.raises(WeightsError, match="use_shared_relative_position_bias"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("preset", "config"),
    [
        ("beit-b16", {}),
        ("beit-b16-384", dict(image_size=384)),
        ("beit-l16", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)),
        (
            "beit-l16-512",
            dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=512),
        ),
    ],
)
def test_full_size_hf_layouts_fill_the_presets_exactly(preset: str, config: dict) -> None:
    """microsoft/beit-{base,large}-patch16-{224,384,512}'s configs (relative bias per block,
    mean pooling) built on the meta device: every tensor maps onto the preset, shapes equal."""
    hf_config = transformers.BeitConfig(
        use_relative_position_bias=True,
        use_mean_pooling=True,
        num_labels=1000,
        intermediate_size=4 * config.get("hidden_size", 768),
        **config,
    )
    from vitzoo.weights.converter import raise_for_problems, target_shapes

    with torch.device("meta"):
        hf_model = transformers.BeitForImageClassification(hf_config)
        ours = vitzoo.build(preset)
    shapes = target_shapes(ours)
    (converter,) = converters_for("beit", "hf")
    conversion = converter.convert(hf_model.state_dict(), shapes)
    raise_for_problems(conversion, shapes, f"HF -> {preset}")
