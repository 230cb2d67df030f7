"""Released checkpoints compute the same function in vitzoo (issue 9's five numeric fixes).

Each reference fixture (``tools/reference_fixtures/``, written in an environment with timm /
vit-pytorch) holds a peer model at a tiny width with EVERY tensor perturbed, a fixed input and
the peer's eval output. The vitzoo model is built from the fixture's constructor arguments, the
peer's state dict goes through the registered converter (strict: every tensor used, every vitzoo
tensor filled), and the outputs must agree by ``fidelity``'s rule (float64 within 1e-9, float32
within 1e-5 x the output's scale).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fidelity import Forward, assert_matches_fixture, assert_same_function, call
from reference_data import ReferenceFixture, load_reference, max_abs_diff
from weights_helpers import perturb_every_tensor

import vitzoo
from vitzoo.weights import load_pretrained, load_state_dict


def converted(spec: dict[str, Any], state: dict[str, torch.Tensor], source: str = "timm"):
    model = vitzoo.build({"model": spec}).eval()
    load_state_dict(model, state, source=source)
    return model


def assert_computes_fixture(
    model: torch.nn.Module, fixture: ReferenceFixture, forward: Forward = call
) -> None:
    assert_matches_fixture(model, fixture, forward)
    reference = fixture.output
    # Not vacuous: the reference output depends on the input (batch items differ, or the
    # position table moved the tokens).
    moved = (reference[0] - reference[1]) if len(reference) > 1 else reference - fixture.input
    assert moved.abs().max() > 1e-3, f"{fixture.name}: the reference output ignores its input"


# -- XCiT --------------------------------------------------------------------------------------
def xcit_spec(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "xcit",
        "image_size": meta["image_size"],
        "num_classes": meta["num_classes"],
        "dim": meta["embed_dim"],
        "depth": meta["depth"],
        "num_heads": meta["num_heads"],
        "cls_depth": meta["cls_attn_layers"],
        "patch": {"type": "xcit-stem", "patch_size": meta["patch_size"]},
        "mlp": {"type": "mlp", "ratio": meta["mlp_ratio"]},
        "class_block": {"type": "xcit-class-attention", "tokens_norm": meta["tokens_norm"]},
    }


@pytest.mark.parametrize("name", ["timm-xcit", "timm-xcit-nano-style"])
def test_xcit_computes_timms_function(name: str) -> None:
    fixture = load_reference(name)
    assert_computes_fixture(converted(xcit_spec(fixture.meta), fixture.state_dict), fixture)


def official_xcit_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's key layout back to facebookresearch/xcit's (what timm's checkpoint filter undoes)."""
    out = {}
    for key, tensor in state.items():
        if ".attn.q." in key and key.startswith("cls_attn_blocks"):
            parts = [state[key.replace(".q.", f".{c}.")] for c in "qkv"]
            out[key.replace(".q.", ".qkv.")] = torch.cat(parts)
        elif key.startswith("cls_attn_blocks") and (".attn.k." in key or ".attn.v." in key):
            continue
        else:
            out[key.replace("pos_embed.", "pos_embeder.")] = tensor
    return out


def test_xcit_loads_the_official_layout() -> None:
    fixture = load_reference("timm-xcit")
    state = official_xcit_layout(fixture.state_dict)
    assert "pos_embeder.token_projection.weight" in state
    model = converted(xcit_spec(fixture.meta), state, source="official")
    assert_computes_fixture(model, fixture)


def test_an_official_xcit_file_loads_without_naming_its_format(tmp_path) -> None:
    """A plain state-dict file is read as timm's format; XCiT has a timm and an official
    converter, and the one that recognises the checkpoint is chosen (the sole timm converter
    was once taken blindly, and the official file refused)."""
    from safetensors.torch import save_file

    fixture = load_reference("timm-xcit")
    path = tmp_path / "xcit_official.safetensors"
    save_file(
        {k: v.contiguous() for k, v in official_xcit_layout(fixture.state_dict).items()}, path
    )
    loaded = load_pretrained(path, {"model": xcit_spec(fixture.meta)})
    assert loaded.converter == "official-xcit"
    assert_computes_fixture(loaded.model.eval(), fixture)


def test_xcit_class_attention_is_not_caits() -> None:
    """The CaiT block (class token only) must stay different: XCiT's released layer is another."""
    fixture = load_reference("timm-xcit")
    spec = xcit_spec(fixture.meta)
    spec["class_block"] = {"type": "class-attention", "layer_scale": 1.0}
    model = converted(spec, fixture.state_dict)
    with torch.no_grad():
        assert max_abs_diff(model(fixture.input), fixture.output) > 1e-2


# -- LeViT -------------------------------------------------------------------------------------
def test_levit_computes_timms_function() -> None:
    fixture = load_reference("timm-levit")
    meta = fixture.meta
    spec = {
        "type": "levit",
        "image_size": meta["img_size"],
        "num_classes": meta["num_classes"],
        "dims": meta["embed_dim"],
        "depths": meta["depth"],
        "num_heads": meta["num_heads"],
        "key_dim": meta["key_dim"],
    }
    assert_computes_fixture(converted(spec, fixture.state_dict), fixture)


# -- CrossViT ----------------------------------------------------------------------------------
def crossvit_spec(meta: dict[str, Any]) -> dict[str, Any]:
    (small_patch, large_patch), (small_dim, large_dim) = meta["patch_size"], meta["embed_dim"]
    return {
        "type": "crossvit",
        "image_size": meta["image_size"],
        "num_classes": meta["num_classes"],
        "num_heads": meta["num_heads"],
        "multi_scale_blocks": meta["multi_scale_blocks"],
        "small": {"patch_size": small_patch, "dim": small_dim, "depth": meta["depth"][0]},
        "large": {
            "patch_size": large_patch,
            "dim": large_dim,
            "depth": meta["depth"][1],
            "image_size": meta["large_image_size"],
        },
        "mlp": {"type": "mlp", "ratio": meta["mlp_ratio"]},
    }


def test_crossvit_computes_timms_function_with_the_resized_large_branch() -> None:
    fixture = load_reference("timm-crossvit")
    assert_computes_fixture(converted(crossvit_spec(fixture.meta), fixture.state_dict), fixture)


# -- MaxViT ------------------------------------------------------------------------------------
def maxvit_spec(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "maxvit",
        "image_size": meta["img_size"],
        "num_classes": meta["num_classes"],
        "stem_dim": meta["stem_width"],
        "dims": meta["embed_dim"],
        "depths": meta["depths"],
        "head_dim": meta["dim_head"],
        "window_size": meta["window_size"][0],
        "grid_size": meta["window_size"][0],
        "head_hidden_dim": meta["head_hidden_size"],
    }


def test_maxvit_defaults_compute_the_released_tf_function() -> None:
    fixture = load_reference("timm-maxvit")
    assert_computes_fixture(converted(maxvit_spec(fixture.meta), fixture.state_dict), fixture)


@pytest.mark.parametrize(
    "pytorch_style",
    [{"padding": "symmetric"}, {"bn_eps": 1e-5}, {"activation": "gelu", "mlp": {"type": "mlp"}}],
)
def test_each_maxvit_tf_option_matters(pytorch_style: dict[str, Any]) -> None:
    """Every one of the three TF conventions changes the output: none is a no-op."""
    fixture = load_reference("timm-maxvit")
    model = converted({**maxvit_spec(fixture.meta), **pytorch_style}, fixture.state_dict)
    with torch.no_grad():
        assert max_abs_diff(model(fixture.input), fixture.output) > 1e-4


# -- SimpleViT ---------------------------------------------------------------------------------
SIMPLE_VIT_2D = {
    "type": "simple-vit",
    "image_size": [12, 20],
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "patch": {"type": "linear", "patch_size": 4},
    "num_classes": 2,
}
SIMPLE_VIT_3D = {
    "type": "simple-vit-3d",
    "image_size": [12, 16],
    "frames": 4,
    "dim": 48,
    "depth": 1,
    "num_heads": 2,
    "num_classes": 2,
    "patch": {"type": "tubelet", "patch_size": 4, "frame_patch_size": 2},
}


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("vit-pytorch-simple-vit-posemb-2d", SIMPLE_VIT_2D),
        ("vit-pytorch-simple-vit-posemb-3d", SIMPLE_VIT_3D),
    ],
)
def test_simple_vit_positions_are_the_reference_table(name: str, spec: dict[str, Any]) -> None:
    """The position module a default simple-vit builds adds vit-pytorch's (big_vision's) table."""
    fixture = load_reference(name)
    posenc = vitzoo.build({"model": spec}).posenc
    grid = tuple(fixture.meta["grid"])
    assert_computes_fixture(posenc, fixture, lambda module, x: module(x, grid, 0))


# -- LeViT from Hugging Face -------------------------------------------------------------------
@pytest.mark.parametrize(
    "architecture", ["LevitForImageClassificationWithTeacher", "LevitForImageClassification"]
)
def test_hf_levit_folder_computes_the_same_function(tmp_path, architecture: str) -> None:
    """A random-init HF LeViT (every tensor perturbed), saved with save_pretrained, loaded
    through vitzoo with the spec derived from its config.json: the same logits."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LevitConfig(
        image_size=64,
        hidden_sizes=[16, 24, 32],
        num_attention_heads=[2, 3, 4],
        depths=[1, 2, 1],
        key_dim=[8, 8, 8],
        mlp_ratio=[2, 2, 2],
        attention_ratio=[2, 2, 2],
        down_ops=[["Subsample", 8, 2, 4, 2, 2], ["Subsample", 8, 3, 4, 2, 2]],
        num_labels=5,
    )
    torch.manual_seed(0)  # HF's random init, so the figures are the same every run
    hf_model = getattr(transformers, architecture)(config)
    perturb_every_tensor(hf_model, weight_scale=1.0)
    hf_model.eval().save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.conversion.unmatched_source == [] and loaded.conversion.missing_target == []
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        spread = max_abs_diff(*hf_model(pixel_values=x).logits)
    assert spread > 1e-2, "the comparison is vacuous: logits do not depend on the input"
    assert_same_function(
        loaded.model.eval(),
        hf_model,
        x,
        forward_theirs=lambda model, x: model(pixel_values=x).logits,
        label=f"HF {architecture}",
    )
