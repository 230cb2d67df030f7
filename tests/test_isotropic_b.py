"""Isotropic variants, part B: parallel blocks, linear attention, video, learnable memory,
token reduction (PatchMerger, ATS), CrossViT, XCiT, and the ViT base's register tokens and patch
dropout. Tiny configs only (image 32, patch 8, dim 32-48, depth 1-2; video 4 frames, tubelet 2x8x8).
"""

from __future__ import annotations

import pytest
import torch

import vitzoo
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.class_attention import ClassAttention
from vitzoo.spec import SpecError

torch.set_num_threads(1)

TINY = {
    "type": "vit",
    "image_size": 32,
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "linear", "patch_size": 8},
}
VIDEO = {
    "image_size": 32,
    "frames": 4,
    "dim": 48,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "tubelet", "patch_size": 8, "frame_patch_size": 2},
}


def build(**model: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return vitzoo.build({"model": model}).eval()


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def video(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- shared class attention ----------------------------------------------------------------------
def test_class_attention_is_the_class_row_of_full_attention() -> None:
    torch.manual_seed(0)
    full = MultiHeadAttention(32, 2, MhsaConfig())
    cls_only = ClassAttention(32, 2, MhsaConfig())
    cls_only.load_state_dict(full.state_dict())
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(cls_only(x), full(x)[:, :1], rtol=1e-5, atol=1e-6)


# -- parallel blocks -----------------------------------------------------------------------------
def test_parallel_block_sums_its_branches() -> None:
    model = build(**{**TINY, "type": "parallel-vit", "block": {"type": "parallel", "branches": 3}})
    block = model.blocks[0]
    assert len(block.attn_branches) == 3 and len(block.mlp_branches) == 3
    x = torch.randn(2, 17, 32)
    h = x + sum(b.ls(b.fn(b.norm(x))) for b in block.attn_branches)
    expected = h + sum(b.fn(b.norm(h)) for b in block.mlp_branches)
    torch.testing.assert_close(block(x), expected)
    assert model(images()).shape == (2, 10)


def test_parallel_branches_double_block_parameters() -> None:
    plain, parallel = build(**TINY), build(**{**TINY, "type": "parallel-vit"})
    per_block = count(plain.blocks[0])
    assert count(parallel.blocks[0]) == 2 * per_block


# -- efficient attention -------------------------------------------------------------------------
def test_nystrom_with_all_tokens_as_landmarks_matches_softmax_attention() -> None:
    exact = build(**TINY)
    approx = build(
        **TINY, attention={"type": "nystrom", "landmarks": 17, "residual_conv_kernel": None}
    )
    approx.load_state_dict(exact.state_dict())
    x = images()
    torch.testing.assert_close(approx(x), exact(x), atol=2e-2, rtol=0)


def test_nystrom_masks_padding_and_records_maps() -> None:
    model = build(**TINY, attention={"type": "nystrom", "landmarks": 4})
    attn = model.blocks[0].attn
    x = torch.randn(2, 11, 32)  # 11 tokens: not a multiple of the landmarks
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 6:] = False
    y = attn(x, mask)
    x2 = x.clone()
    x2[1, 6:] = 100.0
    torch.testing.assert_close(attn(x2, mask)[:, :6], y[:, :6])
    maps = vitzoo.attention_maps(model, images(1))
    assert maps["blocks.0.attn"].shape == (1, 2, 17, 17)


def test_nystrom_rejects_bad_options() -> None:
    with pytest.raises(SpecError, match="residual_conv_kernel"):
        build(**TINY, attention={"type": "nystrom", "residual_conv_kernel": 4})


# -- video ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vit3d", "simple-vit-3d"])
def test_video_vits_take_tubelets(kind: str) -> None:
    model = build(type=kind, depth=1, **VIDEO)
    assert model.input_size == (3, 4, 32, 32)
    tokens, grid = model.patch(video())
    assert grid == (2, 4, 4) and tokens.shape == (2, 32, 48)
    assert model(video()).shape == (2, 10)


def test_vit3d_learned_positions_resize_in_3d() -> None:
    model = build(type="vit3d", depth=1, **VIDEO)
    longer = torch.randn(1, 3, 8, 32, 32)
    assert model.forward_features(longer).shape == (1, 1 + 4 * 4 * 4, 48)


def test_tubelet_spec_errors_point_at_the_field() -> None:
    with pytest.raises(SpecError, match="frame_patch_size"):
        build(type="vit3d", **{**VIDEO, "frames": 5})
    with pytest.raises(SpecError, match="video"):
        build(**{**TINY, "patch": {"type": "tubelet", "patch_size": 8}})


def test_factorized_space_time_block_in_vit3d() -> None:
    spec = dict(type="vit3d", depth=1, class_token=False, pool={"type": "mean"}, **VIDEO)
    model = build(**spec, block={"type": "factorized-space-time"})
    assert model(video()).shape == (2, 10)
    with pytest.raises(SpecError, match="class_token"):
        build(
            **{**spec, "class_token": True, "pool": {"type": "cls"}},
            block={"type": "factorized-space-time"},
        )


@pytest.mark.parametrize(
    ("variant", "pool"),
    [
        ("factorized-encoder", "cls"),
        ("factorized-encoder", "mean"),
        ("factorized-self-attention", "mean"),
    ],
)
def test_vivit_ignores_padded_frames(variant: str, pool: str) -> None:
    model = build(
        type="vivit", variant=variant, pool=pool, spatial_depth=1, temporal_depth=1, **VIDEO
    )
    x = video()
    frame_mask = torch.tensor([[True] * 4, [True, True, False, False]])
    y = model(x, frame_mask)
    assert y.shape == (2, 10)
    x2 = x.clone()
    x2[1, :, 2:] = 5.0  # change only the padded frames
    torch.testing.assert_close(model(x2, frame_mask), y)
    # the full video differs: the mask really removed frames
    assert not torch.allclose(model(x)[1], y[1])


def test_vivit_rejects_bad_masks_and_specs() -> None:
    model = build(type="vivit", spatial_depth=1, temporal_depth=1, **VIDEO)
    with pytest.raises(ValueError, match="frame_mask"):
        model(video(), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(SpecError, match="pool"):
        build(
            type="vivit",
            variant="factorized-self-attention",
            spatial_depth=1,
            temporal_depth=1,
            **VIDEO,
        )


# -- learnable memory ----------------------------------------------------------------------------
def test_adding_a_memory_task_leaves_the_base_model_unchanged() -> None:
    from vitzoo_plugins.memory import MemoryVit

    base = build(**TINY)
    x = images(3)
    logits, features = base(x), base.forward_features(x)
    task_a = MemoryVit.from_base(base, memories_per_layer=3, num_classes=5)
    task_b = MemoryVit.from_base(base, memories_per_layer=2, num_classes=4)
    trainable = [p for p in task_a.parameters() if p.requires_grad]
    assert {id(p) for p in trainable}.isdisjoint({id(p) for p in base.parameters()})
    optimiser = torch.optim.SGD(trainable, lr=1.0)
    task_a.train()
    task_a(x).logsumexp(-1).mean().backward()
    optimiser.step()
    task_a.eval()
    torch.testing.assert_close(base(x), logits, rtol=0, atol=0)
    # inside the adapter, the base tokens are exactly the base model's tokens
    torch.testing.assert_close(task_a.forward_features(x)[:, :-1], features, atol=1e-6, rtol=1e-5)
    assert task_a(x).shape == (3, 5) and task_b(x).shape == (3, 4)


def test_memory_vit_from_spec_checks_its_base() -> None:
    model = build(type="memory-vit", memories_per_layer=2, num_classes=3, base=TINY)
    assert model(images()).shape == (2, 3)
    with pytest.raises(SpecError, match="base.type"):
        build(type="memory-vit", base={"type": "xcit"})


# -- token reduction -----------------------------------------------------------------------------
def test_patch_merger_reduces_tokens_after_the_chosen_layer() -> None:
    model = build(**{**TINY, "type": "patch-merger-vit", "merge_after": 0, "merge_tokens": 4})
    # merged tokens are mixtures of every position: only blocks up to the merge give maps
    assert model.feature_layer_names() == ["blocks.0"]
    _, outputs = model.forward_intermediates(images())
    assert [o.shape[1:] for o in outputs] == [(32, 4, 4)]
    final = model.forward_features(images())
    assert final.shape[1] == 4  # after the merge: 4 tokens
    assert model(images()).shape == (2, 10)
    with pytest.raises(SpecError, match="merge_after"):
        build(**{**TINY, "type": "patch-merger-vit", "merge_after": 2})


def test_ats_keeps_at_most_the_budget_and_is_batch_independent() -> None:
    model = build(**{**TINY, "type": "ats-vit", "max_tokens": [8, 4]})
    x = images(3)
    logits, kept = model.forward_with_kept(x)
    assert kept.shape[0] == 3 and kept.shape[1] <= 4
    assert ((kept >= -1) & (kept < 16)).all()
    alone, _ = model.forward_with_kept(x[1:2])
    torch.testing.assert_close(alone, logits[1:2], atol=1e-5, rtol=1e-5)


def test_ats_respects_patch_padding() -> None:
    model = build(**{**TINY, "type": "ats-vit", "max_tokens": [6, 3]})
    x = images(2)
    patch_mask = torch.ones(2, 16, dtype=torch.bool)
    patch_mask[0, 8:] = False  # the bottom half of image 0 is padding
    logits, kept = model.forward_with_kept(x, patch_mask)
    assert (kept[0][kept[0] >= 0] < 8).all()
    x2 = x.clone()
    x2[0, :, 16:] = 3.0
    torch.testing.assert_close(model.forward_with_kept(x2, patch_mask)[0], logits)


def test_ats_without_budgets_is_a_plain_vit() -> None:
    vit, ats = build(**TINY), build(**{**TINY, "type": "ats-vit"})
    ats.load_state_dict(vit.state_dict())
    torch.testing.assert_close(ats(images()), vit(images()))
    with pytest.raises(SpecError, match="max_tokens"):
        build(**{**TINY, "type": "ats-vit", "max_tokens": [4]})


# -- CrossViT and XCiT ---------------------------------------------------------------------------
CROSSVIT = {
    "type": "crossvit",
    "image_size": 32,
    "num_classes": 10,
    "num_heads": 2,
    "multi_scale_blocks": 1,
    "small": {"patch_size": 4, "dim": 16, "depth": 1},
    "large": {"patch_size": 8, "dim": 32, "depth": 1},
}


def test_crossvit_two_branches() -> None:
    model = build(**CROSSVIT)
    x = images()
    assert model.forward_features(x).shape == (2, 48)
    assert model(x).shape == (2, 10)
    _, outputs = model.forward_intermediates(x)
    # small branch (patch 4) then large branch (patch 8) after the multi-scale block
    assert [o.shape for o in outputs] == [(2, 16, 8, 8), (2, 32, 4, 4)]
    assert model.feature_info.reduction() == [4, 8]
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    with pytest.raises(SpecError, match="small.patch_size"):
        build(**{**CROSSVIT, "small": {"patch_size": 5, "dim": 16, "depth": 1}})


@pytest.mark.parametrize(
    ("preset", "published"),
    [("crossvit-ti", 7.0e6), ("crossvit-s", 26.7e6), ("xcit-t12", 6.7e6)],
)
def test_paper_presets_match_published_sizes(preset: str, published: float) -> None:
    with torch.device("meta"):
        model = vitzoo.build(preset)
    assert abs(count(model) - published) / published < 0.01


def test_xcit_tiny_and_xca_padding() -> None:
    model = build(
        type="xcit",
        image_size=32,
        dim=32,
        depth=1,
        num_heads=2,
        cls_depth=1,
        num_classes=10,
        patch={"type": "xcit-stem", "patch_size": 8},
    )
    assert model(images()).shape == (2, 10)
    maps = vitzoo.attention_maps(model, images())
    assert maps["blocks.0.attn"].shape == (2, 2, 16, 16)  # channel-to-channel maps
    xca = model.blocks[0].attn
    x = torch.randn(2, 10, 32)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 7:] = False
    x2 = x.clone()
    x2[0, 7:] = 9.0
    torch.testing.assert_close(xca(x2, mask)[:, :7], xca(x, mask)[:, :7])


def test_xcit_parts_compose_into_a_plain_vit() -> None:
    model = build(
        **TINY, attention={"type": "xca"}, block={"type": "xcit"}, posenc={"type": "fourier"}
    )
    assert model(images()).shape == (2, 10)


# -- register tokens and patch dropout in the ViT base ------------------------------------------
def test_register_tokens_are_prefix_tokens_excluded_from_mean_pooling() -> None:
    model = build(**{**TINY, "type": "simple-vit", "register_tokens": 3})
    assert model.num_prefix_tokens == 3
    features = model.forward_features(images())
    assert features.shape == (2, 3 + 16, 32)
    pooled = model.forward_head(features, pre_logits=True)
    torch.testing.assert_close(pooled, features[:, 3:].mean(dim=1))
    with_cls = build(**{**TINY, "register_tokens": 2})
    tokens, _ = with_cls.embed(images())
    assert with_cls.num_prefix_tokens == 3
    torch.testing.assert_close(tokens[:, 1:3], with_cls.reg_token.expand(2, -1, -1))


def test_patch_dropout_keeps_the_prefix_and_drops_only_in_training() -> None:
    model = build(**{**TINY, "register_tokens": 1, "patch_dropout": 0.5})
    tokens, _ = model.embed(images())
    assert model.drop_patches(tokens).shape == tokens.shape  # eval: nothing dropped
    model.train()
    dropped = model.drop_patches(tokens)
    assert dropped.shape == (2, 2 + 8, 32)
    torch.testing.assert_close(dropped[:, :2], tokens[:, :2])
    for b in range(2):  # every kept token is one of the original patch tokens
        distance = torch.cdist(dropped[b, 2:], tokens[b, 2:])
        assert (distance.min(dim=1).values < 1e-6).all()
