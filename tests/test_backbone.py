"""The backbone API on the model base: indices, features_only, classifier, input sizes.

Every architecture also goes through the conformance checks (feature maps at two sizes,
features_only with and without the head, refused indices); these tests pin the behaviour those
checks rely on, on a few tiny models.
"""

from __future__ import annotations

import pytest
import torch

import vitzoo
from vitzoo.components.features import FeatureExtractor, FeatureIndexError, resolve_feature_indices
from vitzoo.plugins import get_plugin_system
from vitzoo.registration_examples import TINY_VIT
from vitzoo.spec import SpecError

VIT = {"type": "vit", **TINY_VIT, "depth": 3}
WINDOW_VIT = {
    **VIT,
    "class_token": False,
    "pool": {"type": "mean"},
    "attention": {"type": "window", "window_size": 2},
}


def build(model: dict, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return vitzoo.build({"model": model}, **kw).eval()


def images(h: int = 32, w: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1))


# -- index rules ------------------------------------------------------------------------------
def test_indices_int_is_last_n_and_lists_count_from_the_end() -> None:
    assert resolve_feature_indices(None, 4) == [0, 1, 2, 3]
    assert resolve_feature_indices(2, 4) == [2, 3]
    assert resolve_feature_indices([0, -1], 4) == [0, 3]
    assert resolve_feature_indices((3, 1), 4) == [3, 1]  # the caller's order is kept


@pytest.mark.parametrize(
    ("indices", "needle"),
    [
        ([4], "out of range"),
        ([-5], "out of range"),
        ([1, 1], "twice"),
        ([3, -1], "twice"),
        (0, "allowed: 1 to 4"),
        (5, "allowed: 1 to 4"),
        ([], "empty"),
        ([1.0], "not an integer"),
    ],
)
def test_bad_indices_are_refused_not_wrapped(indices: object, needle: str) -> None:
    with pytest.raises(FeatureIndexError, match=needle):
        resolve_feature_indices(indices, 4)  # type: ignore[arg-type]


# -- forward_intermediates / feature_info / features_only -------------------------------------
def test_vit_maps_drop_prefix_tokens_and_follow_the_patch_grid() -> None:
    model = build(
        {
            **VIT,
            "register_tokens": 2,
            "distillation_token": True,
            "pool": {"type": "cls-dist"},
            "head": {"type": "distillation"},
        }
    )
    x = images(32, 48)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, indices=[0, -1], norm=True)
        tokens = model.forward_intermediates(
            x, indices=1, output_fmt="NLC", norm=True, intermediates_only=True
        )
    assert final.shape == (2, 4 + 24, 32)  # cls + dist + 2 registers + 4x6 patches
    assert [m.shape for m in maps] == [(2, 32, 4, 6)] * 2
    torch.testing.assert_close(final[:, 4:], tokens[0])  # norm=True is the final norm
    torch.testing.assert_close(maps[-1].flatten(2).transpose(1, 2), tokens[0])


def test_feature_info_and_features_only_build() -> None:
    model = build(VIT)
    info = model.feature_info
    assert info.channels() == [32] * 3
    assert info.reduction() == [8] * 3
    assert info.module_name() == ["blocks.0", "blocks.1", "blocks.2"]
    backbone = build(VIT, features_only=True, out_indices=(0, 1))
    assert isinstance(backbone, FeatureExtractor)
    assert backbone.feature_info.module_name() == ["blocks.0", "blocks.1"]
    assert len(backbone.model.blocks) == 2  # block 2 is pruned, and so is the head
    assert not list(backbone.model.get_classifier().parameters())
    x = images()
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        got = backbone(x)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(TypeError, match="features_only"):
        build(VIT, out_indices=(0,))


def test_hierarchical_feature_info_reads_stage_channels_and_strides() -> None:
    spec = {
        "type": "twins-svt",
        **get_plugin_system().registry.get("architecture", "twins-svt").example,
    }
    model = build(spec)
    info = model.feature_info
    assert info.module_name() == [f"stages.{i}" for i in range(len(info))]
    maps = model.forward_intermediates(model.example_input(1), intermediates_only=True)
    assert info.channels() == [m.shape[1] for m in maps]
    assert info.reduction() == [32 // m.shape[-1] for m in maps]


# -- classifier -------------------------------------------------------------------------------
def test_reset_classifier_keeps_device_dtype_and_mode() -> None:
    model = build(VIT).to(torch.bfloat16).eval()
    model.reset_classifier(3)
    head = model.get_classifier()
    assert {p.dtype for p in head.parameters()} == {torch.bfloat16} and not head.training
    assert model(images().to(torch.bfloat16)).shape == (2, 3)
    model.reset_classifier(0)
    assert not list(model.get_classifier().parameters())


def test_reset_classifier_global_pool_changes_pooling_and_the_spec(tmp_path) -> None:
    model = build(VIT)
    model.reset_classifier(4, global_pool="avg")
    x = images()
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats[:, 1:].mean(1))
    loaded = vitzoo.load(vitzoo.save(model, tmp_path / "m.safetensors")).eval()
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="allowed"):
        model.reset_classifier(4, global_pool="nope")
    staged = build(
        {"type": "pit", **get_plugin_system().registry.get("architecture", "pit").example}
    )
    with pytest.raises(ValueError, match="allowed: \\['token'\\]"):
        staged.reset_classifier(2, global_pool="avg")


def test_global_pool_of_another_width_rebuilds_the_pooled_norm_where_the_model_is(
    tmp_path,
) -> None:
    """cls-mean pools to 2 D: a model with a norm of the pooled vector (BEiT/EVA's fc_norm) gets
    one of the new width, and every new part is in the model's dtype, whatever the pooling it
    leaves had (cls has no parameter to ask); switching back restores the D-wide norm."""
    model = build({**VIT, "pool": {"type": "mean"}, "fc_norm": True}).to(torch.float64).eval()
    x = images().to(torch.float64)
    for pool, width in (("cls-mean", 64), ("map", 32), ("cls", 32), ("cls-mean", 64)):
        model.reset_classifier(3, global_pool=pool)
        assert model.num_features == width and model.fc_norm.weight.shape == (width,), pool
        assert {p.dtype for p in model.parameters()} == {torch.float64}, pool
        with torch.no_grad():
            assert model(x).shape == (2, 3), pool
    loaded = vitzoo.load(vitzoo.save(model, tmp_path / "m.safetensors")).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


# -- input sizes ------------------------------------------------------------------------------
def test_set_input_size_keeps_function_and_resamples_positions() -> None:
    model = build(VIT)
    x = images()
    with torch.no_grad():
        before = model(x)
        model.set_input_size(32)  # same size: the very same function
        torch.testing.assert_close(model(x), before)
        model.set_input_size((48, 64))
    assert model.input_size == (3, 48, 64)
    assert model.posenc.pos_embed.shape == (1, 1 + 6 * 8, 32)
    assert model.vitzoo_spec.model.image_size == (48, 64)
    assert model(images(48, 64)).shape == (2, 10)


def test_set_input_size_refuses_untileable_sizes_at_spec_time() -> None:
    spec = {"type": "maxvit", **get_plugin_system().registry.get("architecture", "maxvit").example}
    model = build(spec)
    with pytest.raises(SpecError, match="allowed: multiples of"):
        model.set_input_size((40, 48))
    assert model.input_size[1:] == (32, 32)  # untouched


def test_dynamic_img_size_follows_each_input_grid() -> None:
    dynamic = build({**WINDOW_VIT, "dynamic_img_size": True})
    rebuilt = build(WINDOW_VIT)
    x = images(48, 64)
    with torch.no_grad():
        out = dynamic(x)
        rebuilt.set_input_size((48, 64))
        torch.testing.assert_close(out, rebuilt(x))  # same weights, resampled per call
        assert dynamic(images()).shape == (2, 10)  # and back to the built size
    with pytest.raises(SpecError, match="dynamic_img_size"):
        build(
            {
                **WINDOW_VIT,
                "dynamic_img_size": True,
                "attention": {"type": "dssa", "window_size": 2},
            }
        )


HIERARCHICAL = sorted(
    e.name for e in get_plugin_system().registry.entries("architecture") if "feature-maps" in e.tags
)


@pytest.mark.parametrize("name", HIERARCHICAL)
def test_hierarchical_models_take_288x320_or_say_which_sizes_work(name: str) -> None:
    """On the meta device (shapes only): the tiny model runs at 288x320 with maps at its
    declared strides, or set_input_size refuses the size naming the sizes that work."""
    example = get_plugin_system().registry.get("architecture", name).example
    with torch.device("meta"):
        model = vitzoo.build({"model": {"type": name, **example}})
        info = model.feature_info
        try:
            model.set_input_size((288, 320))
        except SpecError as exc:
            assert "allowed" in str(exc)
            return
        maps = model.forward_intermediates(model.example_input(1), intermediates_only=True)
    for fmap, red in zip(maps, info.reduction(), strict=True):
        assert abs(fmap.shape[-2] - 288 / red) <= 1 and abs(fmap.shape[-1] - 320 / red) <= 1


def test_set_input_size_can_change_windows_and_resamples_their_tables() -> None:
    spec = {"type": "maxvit", **get_plugin_system().registry.get("architecture", "maxvit").example}
    model = build(spec)
    table = "stages.0.0.block_attention.attn.relative_position.relative_position_bias_table"
    before = dict(model.named_parameters())[table].shape
    model.set_input_size(64, window_size=4)
    after = dict(model.named_parameters())[table].shape
    assert (before[0], after[0]) == (3 * 3, 7 * 7)  # (2w - 1)^2 offsets for w = 2 -> 4
    assert model.vitzoo_spec.model.window_size == 4
    assert model(images(64, 64)).shape == (2, model.num_classes)


def test_attention_command_refuses_an_out_of_range_layer(tmp_path) -> None:
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from vitzoo.commands.inspect import attention

    ckpt = vitzoo.save(build(VIT), tmp_path / "m.safetensors")
    image = tmp_path / "i.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype="uint8")).save(image)
    args = [str(ckpt), str(image), "-o", str(tmp_path / "o.png"), "--layer", "3"]
    result = CliRunner().invoke(attention, args)  # 3 blocks: layer 3 used to mean layer 0
    assert result.exit_code != 0 and "out of range" in result.output
