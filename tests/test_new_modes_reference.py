"""The architecture modes added with the new presets compute their reference's function: timm's
Twins-PCPVT and CrossViT's three-conv patch embedding, on perturbed tiny fixtures (written by
tools/make_reference_fixtures.py from tools/reference_fixtures/new_presets.py), compared by
``fidelity``'s rule."""

from __future__ import annotations

import re

from fidelity import assert_matches_fixture
from reference_data import load_reference
from vitzoo_plugins.crossvit import MultiConvPatchEmbed

import vitzoo
from vitzoo.weights import load_state_dict


def timm_twins_to_vitzoo(key: str) -> str:
    """timm Twins names -> the staged model's (the renames only; no tensor changes)."""
    key = re.sub(r"^patch_embeds\.(\d+)\.", r"stages.\1.downsample.", key)
    key = re.sub(r"^blocks\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", key)
    key = re.sub(r"^pos_block\.(\d+)\.proj\.0\.", r"stages.\1.peg.proj.", key)
    return re.sub(r"^head\.", "head.fc.", key)


def test_twins_pcpvt_matches_timm() -> None:
    ref = load_reference("timm-twins-pcpvt")
    meta = ref.meta
    spec = {
        "model": {
            "type": "twins-pcpvt",
            "image_size": meta["img_size"],
            "num_classes": meta["num_classes"],
            "dims": meta["embed_dims"],
            "depths": meta["depths"],
            "num_heads": meta["num_heads"],
            "patch_sizes": [meta["patch_size"]] + [2] * (len(meta["depths"]) - 1),
            "sr_ratios": meta["sr_ratios"],
            "mlp_ratios": meta["mlp_ratios"],
        }
    }
    model = vitzoo.build(spec).eval()
    model.load_state_dict({timm_twins_to_vitzoo(k): v for k, v in ref.state_dict.items()})
    assert_matches_fixture(model, ref)


def test_crossvit_multi_conv_patch_embedding_matches_timm() -> None:
    for patch in (12, 16):
        ref = load_reference(f"timm-crossvit-multi-conv-{patch}")
        embed = MultiConvPatchEmbed(3, ref.meta["embed_dim"], patch).eval()
        embed.load_state_dict(ref.state_dict)
        size = ref.meta["img_size"] // patch
        assert embed(ref.input)[1] == (size, size)
        assert_matches_fixture(embed, ref, lambda module, x: module(x)[0])


def test_crossvit_dagger_matches_timm_through_the_converter() -> None:
    """The whole dagger model (three-conv patches, 224/240-style resized large branch), with
    timm's state dict through the registered CrossViT converter."""
    ref = load_reference("timm-crossvit-dagger")
    meta = ref.meta
    small_dim, large_dim = meta["embed_dim"]
    spec = {
        "model": {
            "type": "crossvit",
            "image_size": meta["image_size"],
            "num_classes": meta["num_classes"],
            "num_heads": 2,
            "multi_scale_blocks": 1,
            "small": {"patch_size": 12, "dim": small_dim, "depth": 1},
            "large": {
                "patch_size": 16,
                "dim": large_dim,
                "depth": 1,
                "image_size": meta["large_image_size"],
            },
            "mlp": {"type": "mlp", "ratio": 2.0},
            "patch": {"type": "multi-conv"},
        }
    }
    model = vitzoo.build(spec).eval()
    load_state_dict(model, ref.state_dict, source="timm")
    assert_matches_fixture(model, ref)
    assert (ref.output[0] - ref.output[1]).abs().max() > 1e-3  # the output depends on the input
