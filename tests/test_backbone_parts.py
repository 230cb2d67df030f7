"""The parts issue 21's backbones added, each usable in any spec: cls-mean pooling, the linear
patchifier's norms (Dual PatchNorm, against vit-pytorch's own module), the learned table's
resampling options, and the ``Sum`` / ``Slice`` converter rules."""

from __future__ import annotations

import copy

import pytest
import torch
from fidelity import assert_matches_fixture
from reference_data import load_reference

import vitzoo
from vitzoo.errors import SpecError
from vitzoo.registration_examples import TINY_VIT
from vitzoo.weights import Rename, Slice, Sum
from vitzoo.weights.converter import apply_rules


def tiny(**model) -> torch.nn.Module:
    return vitzoo.build({"model": {"type": "vit", **TINY_VIT, **model}}).eval()


# -- cls-mean pooling ------------------------------------------------------------------------
def test_cls_mean_pools_to_twice_the_width_and_the_head_follows() -> None:
    model = tiny(pool={"type": "cls-mean"}, register_tokens=3)
    assert model.num_features == 64 and model.head.fc.in_features == 64
    x = model.example_input(2)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
    expected = torch.cat([tokens[:, 0], tokens[:, 1 + 3 :].mean(dim=1)], dim=-1)
    assert torch.equal(pooled, expected)
    assert model(x).shape == (2, 10)


def test_reset_classifier_with_another_pooling_width() -> None:
    """Switching between cls (D) and cls-mean (2 D) rebuilds the head for the new width, and the
    spec follows, so a saved checkpoint rebuilds the same model."""
    model = tiny()
    model.reset_classifier(4, global_pool="cls-mean")
    assert model.num_features == 64 and model.head.fc.in_features == 64
    assert model.vitzoo_spec.model.pool.type == "cls-mean"
    assert model(model.example_input(1)).shape == (1, 4)
    model.reset_classifier(0, global_pool="token")
    assert model.num_features == 32
    assert model.forward_head(model.forward_features(model.example_input(1))).shape == (1, 32)


def test_cls_mean_needs_a_class_token() -> None:
    with pytest.raises(SpecError, match="class token"):
        tiny(pool={"type": "cls-mean"}, class_token=False)


# -- the linear patchifier's norms -----------------------------------------------------------
def test_dual_patchnorm_is_vit_pytorchs_patch_embedding() -> None:
    """vit-pytorch's to_patch_embedding (LayerNorm over (p1 p2 c)-ordered patches, Linear,
    LayerNorm) with every tensor perturbed: the patchifier with ``pre_norm`` and ``norm``
    computes its tokens; the Linear is the convolution's weight in (p1 p2 c) order."""
    fixture = load_reference("vit-pytorch-dual-patchnorm")
    meta = fixture.meta
    ph, pw = meta["patch_size"]
    model = vitzoo.build(
        {
            "model": {
                "type": "vit",
                "image_size": meta["image_size"],
                "dim": meta["dim"],
                "depth": 1,
                "num_heads": meta["heads"],
                "patch": {
                    "type": "linear",
                    "patch_size": [ph, pw],
                    "pre_norm": "layernorm",
                    "norm": "layernorm",
                },
            }
        }
    ).eval()
    state = fixture.state_dict
    weight = state["2.weight"].reshape(meta["dim"], ph, pw, meta["channels"]).permute(0, 3, 1, 2)
    model.patch.load_state_dict(
        {
            "pre_norm.weight": state["1.weight"],
            "pre_norm.bias": state["1.bias"],
            "proj.weight": weight,
            "proj.bias": state["2.bias"],
            "norm.weight": state["3.weight"],
            "norm.bias": state["3.bias"],
        }
    )
    assert_matches_fixture(model.patch, fixture, lambda patch, x: patch(x)[0])


def test_patch_norm_after_projection_is_optional_and_typed() -> None:
    plain = tiny()
    assert plain.patch.pre_norm is None and plain.patch.norm is None
    rms = tiny(patch={"type": "linear", "patch_size": 8, "norm": "rmsnorm", "norm_eps": 1e-5})
    assert isinstance(rms.patch.norm, torch.nn.RMSNorm) and rms.patch.norm.eps == 1e-5
    assert not hasattr(rms.patch.norm, "bias") or rms.patch.norm.bias is None


# -- resampling the learned table ------------------------------------------------------------
def test_resampling_options_reach_every_resampling_path() -> None:
    """The per-call path (another input size) and set_input_size give the same table, both by
    the posenc's options; different options give another table."""
    posenc = {"type": "learned", "antialias": True, "interpolate_offset": 0.1}
    model = tiny(posenc=posenc)
    torch.nn.init.normal_(model.posenc.pos_embed)
    per_call = model.posenc.table_for((3, 2))
    resized = copy.deepcopy(model)
    resized.set_input_size((24, 16))
    assert torch.equal(resized.posenc.pos_embed, per_call)
    plain = tiny()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain.posenc.table_for((3, 2)), per_call, atol=1e-3)


@pytest.mark.parametrize(
    ("posenc", "match"),
    [
        ({"interpolate_offset": 1.0}, "interpolate_offset"),
        ({"interpolation": "nearest"}, "interpolation"),
    ],
)
def test_bad_resampling_options_are_spec_errors(posenc: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        tiny(posenc={"type": "learned", **posenc})


def test_antialias_is_refused_on_a_video_grid() -> None:
    from vitzoo_plugins.video import TINY_VIDEO

    posenc = {"type": "learned", "antialias": True}
    with pytest.raises(SpecError, match="2-D patch grids"):
        vitzoo.build({"model": {**TINY_VIDEO, "type": "vit3d", "posenc": posenc}})


# -- converter rules ---------------------------------------------------------------------------
FOLD = (
    Sum(("cls", "pos"), "cls_token", ((), (Slice(1, 0, 1),)), shared=(1,)),
    Rename("pos", "posenc.pos_embed", (Slice(1, 1),)),
)
SHAPES = {"cls_token": (1, 1, 4), "posenc.pos_embed": (1, 9, 4)}


def test_sum_folds_a_row_of_a_tensor_another_rule_maps() -> None:
    cls, pos = torch.randn(1, 1, 4), torch.randn(1, 10, 4)
    for order in (("cls", "pos"), ("pos", "cls")):  # either key may come first
        tensors = {k: {"cls": cls, "pos": pos}[k] for k in order}
        conversion = apply_rules(FOLD, tensors, SHAPES)
        assert conversion.problems(SHAPES) == []
        assert torch.equal(conversion.tensors["cls_token"], cls + pos[:, :1])
        assert torch.equal(conversion.tensors["posenc.pos_embed"], pos[:, 1:])


def test_sum_keeps_the_accounting_strict() -> None:
    """A shared tensor no other rule maps is reported unused; summed shapes must agree."""
    lone = apply_rules(
        FOLD[:1], {"cls": torch.zeros(1, 1, 4), "pos": torch.zeros(1, 10, 4)}, SHAPES
    )
    assert lone.unmatched_source == ["pos"]
    mismatch = apply_rules(
        (Sum(("cls", "pos"), "cls_token"),),
        {"cls": torch.zeros(1, 1, 4), "pos": torch.zeros(1, 2, 4)},
        SHAPES,
    )
    assert "summed shapes differ" in mismatch.unknown_target["cls"]
