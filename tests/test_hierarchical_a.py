"""Issue 4 (part A): PiT, LeViT, CvT, Twins-SVT, MaxViT, MobileViT and the shared 2D components
(window / grid attention, spatial-reduction and conv-projection attention, PEG, BN fusion).
Tiny configs only (32-64 px)."""

from __future__ import annotations

import pytest
import torch

import vitzoo
from vitzoo.capabilities import offers_of_model
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.conv import ConvNormAct, fuse_batchnorm
from vitzoo.components.spatial_attention import SpatialReductionAttention, SpatialReductionConfig
from vitzoo.components.windows import (
    WindowAttention,
    WindowAttentionConfig,
    grid_partition,
    grid_reverse,
    window_partition,
    window_reverse,
)
from vitzoo.introspection import record_attention
from vitzoo.plugins import get_registry
from vitzoo.spec import SpecError

TINY: dict[str, dict] = {
    "pit": {
        "type": "pit", "image_size": 32, "patch_size": 8, "stride": 4, "base_dims": [8, 8],
        "depths": [1, 1], "num_heads": [2, 4], "num_classes": 5,
    },
    "levit": {
        "type": "levit", "image_size": 64, "dims": [32, 48], "depths": [1, 1],
        "num_heads": [2, 3], "key_dim": 8, "num_classes": 5,
    },
    "cvt": {
        "type": "cvt", "image_size": 32, "dims": [16, 32], "depths": [1, 1], "num_heads": [1, 2],
        "patch_sizes": [7, 3], "patch_strides": [4, 2], "patch_padding": [2, 1], "num_classes": 5,
    },
    "twins-svt": {
        "type": "twins-svt", "image_size": 32, "dims": [16, 32], "depths": [2, 2],
        "num_heads": [1, 2], "patch_sizes": [4, 2], "windows": [4, 2], "sr_ratios": [2, 1],
        "num_classes": 5,
    },
    "maxvit": {
        "type": "maxvit", "image_size": 32, "stem_dim": 16, "dims": [16, 32], "depths": [1, 1],
        "head_dim": 8, "window_size": 2, "grid_size": 2, "num_classes": 5,
    },
    "mobilevit": {
        "type": "mobilevit", "image_size": 32, "stem_dim": 8, "channels": [8, 16, 24],
        "mv2_blocks": [1, 1, 1], "strides": [1, 2, 2], "transformer_dims": [0, 16, 24],
        "transformer_depths": [0, 1, 1], "num_heads": 2, "final_dim": 32, "num_classes": 5,
    },
}  # fmt: skip

#: (C, H, W) of every stage's map for the TINY configs above.
STAGE_SHAPES = {
    "pit": [(16, 7, 7), (32, 4, 4)],
    "levit": [(32, 4, 4), (48, 2, 2)],
    "cvt": [(16, 8, 8), (32, 4, 4)],
    "twins-svt": [(16, 8, 8), (32, 4, 4)],
    "maxvit": [(16, 8, 8), (32, 4, 4)],
    "mobilevit": [(8, 16, 16), (16, 8, 8), (24, 4, 4)],
}

#: The per-stage list to make one entry too long, and the field that defines the stage count.
STAGE_LIST = {
    "pit": "depths",
    "levit": "depths",
    "cvt": "num_heads",
    "twins-svt": "sr_ratios",
    "maxvit": "depths",
    "mobilevit": "transformer_depths",
}


def build(spec: dict, **changes: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return vitzoo.build({"model": {**spec, **changes}}).eval()


@pytest.mark.parametrize("name", list(TINY))
def test_intermediates_are_every_stage_map(name: str) -> None:
    model = build(TINY[name])
    x = torch.randn(2, 3, *model.input_size[1:])
    final, maps = model.forward_intermediates(x)
    assert [tuple(m.shape) for m in maps] == [(2, *s) for s in STAGE_SHAPES[name]]
    torch.testing.assert_close(final, model.forward_features(x))
    torch.testing.assert_close(model.forward_head(final), model(x))
    assert "feature-maps" in offers_of_model(model, get_registry())
    _, last = model.forward_intermediates(x, indices=[-1])
    torch.testing.assert_close(last[0], maps[-1])


@pytest.mark.parametrize("name", list(TINY))
def test_gradients_reach_every_parameter(name: str) -> None:
    model = build(TINY[name]).train()
    out = model(torch.randn(2, 3, *model.input_size[1:]))
    loss = sum(o.sum() for o in out) if isinstance(out, tuple) else out.sum()
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name", list(TINY))
def test_stage_list_of_wrong_length_is_a_spec_error(name: str) -> None:
    field = STAGE_LIST[name]
    values = list(TINY[name][field])
    with pytest.raises(SpecError) as info:
        vitzoo.build({"model": {**TINY[name], field: [*values, values[-1]]}})
    issue = info.value.issues[0]
    assert issue.path == f"model.{field}"
    assert "stages" in issue.message


@pytest.mark.parametrize(
    ("name", "image_size", "needle"),
    [
        ("maxvit", 40, "windows"),  # last map 40/8 = 5 does not tile into 2x2 windows / grids
        ("twins-svt", 36, "patch stride"),  # 36 is not a multiple of the total stride 4 * 2
        ("mobilevit", 40, "patches"),  # last map 40/8 = 5 does not tile into 2x2 patches
    ],
)
def test_indivisible_image_size_is_a_spec_error(name: str, image_size: int, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        vitzoo.build({"model": {**TINY[name], "image_size": image_size}})
    issue = info.value.issues[0]
    assert issue.path == "model.image_size"
    assert needle in issue.message


@pytest.mark.parametrize(
    ("name", "image_size"),
    [
        ("pit", 48),
        ("levit", 48),
        ("cvt", (32, 48)),
        ("twins-svt", (32, 64)),
        ("maxvit", 64),
        ("mobilevit", (32, 64)),
    ],
)
def test_other_image_sizes_work(name: str, image_size: int | tuple[int, int]) -> None:
    model = build(TINY[name], image_size=image_size)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert model.input_size == (3, h, w)
    _, maps = model.forward_intermediates(torch.randn(1, 3, h, w))
    assert model(torch.randn(1, 3, h, w)).shape == (1, 5)
    last_h, last_w = maps[-1].shape[-2:]
    assert last_w * h == last_h * w  # the last map keeps the image's aspect ratio


def test_levit_bn_fusion_keeps_eval_output() -> None:
    model = build(TINY["levit"]).train()
    with torch.no_grad():  # give the BatchNorms non-trivial running statistics and affines
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.fuse()
        after = model(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    body = [*model.stem.modules(), *model.stages.modules()]
    assert not any(isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d) for m in body)


def test_levit_fuse_refuses_training_mode() -> None:
    with pytest.raises(RuntimeError, match="eval"):
        build(TINY["levit"]).train().fuse()


def test_levit_distillation_head_pair_in_training_mean_in_eval() -> None:
    model = build(TINY["levit"])
    x = torch.randn(2, 3, 64, 64)
    model.train()
    cls_logits, dist_logits = model(x)
    assert cls_logits.shape == dist_logits.shape == (2, 5)
    model.eval()
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        expected = (model.head.fc(pooled) + model.head.fc_dist(pooled)) / 2
        torch.testing.assert_close(model(x), expected)


def test_levit_residual_branches_start_at_zero_but_shrinking_attention_does_not() -> None:
    model = build(TINY["levit"])
    stage = model.stages[1]
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        shrunk = stage.downsample[0](x)  # no residual: must carry signal at initialisation
        assert shrunk.abs().sum() > 0
        block_attention = stage.blocks[0]
        torch.testing.assert_close(block_attention(shrunk), shrunk)  # zero-gain residual branch


def test_levit_attention_bias_reaches_the_maps() -> None:
    model = build(TINY["levit"])
    with record_attention(model) as maps:
        model(torch.randn(1, 3, 64, 64))
    # stage 0 (4x4 grid), shrinking attention (2x2 queries over 4x4 keys), stage 1 (2x2 grid)
    assert sorted(tuple(m.shape[-2:]) for m in maps.values()) == [(4, 4), (4, 16), (16, 16)]


def test_reset_classifier_keeps_features() -> None:
    for name in ("maxvit", "levit"):
        model = build(TINY[name])
        model.reset_classifier(3)
        model.eval()
        assert model(torch.randn(1, 3, *model.input_size[1:])).shape == (1, 3)


def test_pit_classifies_from_the_class_token() -> None:
    model = build(TINY["pit"])
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 1 + 4 * 4, 32)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats[:, 0])


def test_checkpoint_round_trip(tmp_path) -> None:
    model = build(TINY["levit"])
    path = vitzoo.save(model, tmp_path / "levit.safetensors")
    again = vitzoo.load(path).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(again(x), model(x))


# -- shared components ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("partition", "reverse"), [(window_partition, window_reverse), (grid_partition, grid_reverse)]
)
def test_partitions_round_trip(partition, reverse) -> None:
    x = torch.randn(2, 6, 4, 3)
    groups = partition(x, (3, 2))
    assert groups.shape == (2 * 2 * 2, 6, 3)
    torch.testing.assert_close(reverse(groups, (3, 2), (6, 4)), x)


def test_grid_groups_are_strided() -> None:
    x = torch.arange(16.0).view(1, 4, 4, 1)
    groups = grid_partition(x, (2, 2)).squeeze(-1)
    assert groups[0].tolist() == [0.0, 2.0, 8.0, 10.0]  # one token every 2 rows / 2 columns


def _plain_twin(attn: MultiHeadAttention, dim: int) -> MultiHeadAttention:
    plain = MultiHeadAttention(dim, attn.num_heads, MhsaConfig())
    plain.load_state_dict(attn.state_dict(), strict=False)
    return plain.eval()


@pytest.mark.parametrize("mode", ["block", "grid"])
def test_window_attention_covering_the_map_is_global_attention(mode: str) -> None:
    config = WindowAttentionConfig(window_size=4, mode=mode, relative_bias=False)
    attn = WindowAttention(16, 2, config, grid=(4, 4)).eval()
    x = torch.randn(2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _plain_twin(attn, 16)(x), atol=1e-5, rtol=1e-5)


def test_window_attention_pads_and_masks_partial_windows() -> None:
    config = WindowAttentionConfig(window_size=2, relative_bias=False)
    attn = WindowAttention(8, 2, config, grid=(3, 3)).eval()
    plain = _plain_twin(attn, 8)
    x = torch.randn(1, 3, 3, 8)
    with torch.no_grad():
        out = attn.forward_map(x)
        for rows, cols in [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(2, 3)),
                           (slice(2, 3), slice(0, 2)), (slice(2, 3), slice(2, 3))]:  # fmt: skip
            window = x[:, rows, cols]
            expected = plain(window.reshape(1, -1, 8)).view_as(window)
            torch.testing.assert_close(out[:, rows, cols], expected, atol=1e-5, rtol=1e-5)


def test_spatial_reduction_ratio_one_is_global_attention() -> None:
    attn = SpatialReductionAttention(16, 2, SpatialReductionConfig(ratio=1), grid=(3, 3)).eval()
    plain = MultiHeadAttention(16, 2, MhsaConfig()).eval()
    with torch.no_grad():
        plain.qkv.weight.copy_(torch.cat([attn.q.weight, attn.kv.weight]))
        plain.qkv.bias.copy_(torch.cat([attn.q.bias, attn.kv.bias]))
        plain.proj.load_state_dict(attn.proj.state_dict())
        x = torch.randn(2, 9, 16)
        torch.testing.assert_close(attn(x), plain(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "parts",
    [
        {"attention": {"type": "window", "window_size": 3, "mode": "grid"}, "class_token": False,
         "pool": {"type": "mean"}},
        {"attention": {"type": "spatial-reduction", "ratio": 2}},
        {"attention": {"type": "conv-proj"}, "posenc": {"type": "peg"}},
    ],
)  # fmt: skip
def test_grid_components_slot_into_a_flat_vit(parts: dict) -> None:
    spec = {"type": "vit", "image_size": 32, "dim": 32, "depth": 1, "num_heads": 2,
            "num_classes": 5, "patch": {"type": "linear", "patch_size": 8}, **parts}  # fmt: skip
    model = build(spec)
    with record_attention(model) as maps:
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert len(maps) == 1


def test_window_attention_rejects_a_class_token_at_spec_time() -> None:
    spec = {"type": "vit", "image_size": 32, "dim": 32, "depth": 1, "num_heads": 2,
            "patch": {"type": "linear", "patch_size": 8}, "attention": {"type": "window"}}  # fmt: skip
    with pytest.raises(SpecError, match="class_token: false"):
        vitzoo.build({"model": spec})


def test_conv_bn_fusion_is_exact_in_eval() -> None:
    block = torch.nn.Sequential(ConvNormAct(3, 8, 3, 2, activation="hardswish"))
    block.train()(torch.randn(4, 3, 8, 8))  # non-trivial running statistics
    block.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        before = block(x)
        fuse_batchnorm(block)
        torch.testing.assert_close(block(x), before, atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in block.modules())


def test_grad_checkpointing_gives_the_same_gradients_for_staged_models(monkeypatch) -> None:
    """Checkpointing recomputes whole stages in backward: same loss, same gradients, any stage kind."""
    import vitzoo.components.hierarchical as hierarchical
    from vitzoo.testing import variants

    calls = []
    real_checkpoint = hierarchical.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(args[1])
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(hierarchical, "checkpoint", counting_checkpoint)

    staged = [v for v in variants(kind="architecture") if "feature-maps" in v.tags]
    assert len(staged) >= 10
    for variant in staged:
        results = []
        for enable in (False, True):
            model = variant.build(seed=0).train()
            for module in model.modules():  # BatchNorm would update its statistics twice
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
            model.set_grad_checkpointing(enable)
            torch.manual_seed(1)
            output = model(model.example_input(2))
            loss = sum(o.sum() for o in output) if isinstance(output, tuple) else output.sum()
            loss.backward()
            results.append(
                [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
            )
        assert calls, f"{variant.id}: checkpointing was not used"
        calls.clear()
        for plain, ckpt in zip(*results, strict=True):
            if plain is None:
                assert ckpt is None, variant.id
            else:
                torch.testing.assert_close(plain, ckpt, msg=variant.id)
