"""The architecture modes added with the new presets compute their reference's function:
CrossViT's three-conv patch embedding, on perturbed tiny fixtures (written by
tools/make_reference_fixtures.py from tools/reference_fixtures/new_presets.py), compared by
``fidelity``'s rule. (timm's Twins-PCPVT fixture goes through the registered converter with
the other timm families, tests/test_weights_timm.py.)"""

from __future__ import annotations

from fidelity import assert_matches_fixture
from reference_data import load_reference
from vitzoo_plugins.crossvit import MultiConvPatchEmbed

import vitzoo
from vitzoo.weights import load_state_dict


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
