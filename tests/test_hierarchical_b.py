"""Issue 4 (part B): CrossFormer, RegionViT, ScalableViT, SepViT, NesT and their mechanisms
(long-short distance attention with dynamic position bias, cross-scale embedding, scalable and
interactive-window attention, depthwise separable attention with window tokens, block
aggregation). Tiny configs only (32-64 px)."""

from __future__ import annotations

import pytest
import torch
from vitzoo_plugins.crossformer import LongShortDistanceAttention, LsdaConfig, cross_scale_dims
from vitzoo_plugins.scalablevit import (
    InteractiveWindowAttention,
    IwsaConfig,
    ScalableSelfAttention,
    SsaConfig,
)
from vitzoo_plugins.sepvit import DepthwiseSeparableAttention, DssaConfig

import vitzoo
from vitzoo.capabilities import offers_of_model
from vitzoo.components.attention import MultiHeadAttention
from vitzoo.components.downsample import BlockAggregation
from vitzoo.introspection import record_attention
from vitzoo.plugins import get_registry
from vitzoo.spec import SpecError

TINY: dict[str, dict] = {
    "crossformer": {
        "type": "crossformer", "image_size": 32, "num_classes": 5, "dims": [32, 64],
        "depths": [2, 2], "num_heads": [2, 2], "group_sizes": [2, 2], "intervals": [2, 2],
        "patch": {"type": "cross-scale", "kernel_sizes": [4, 8], "stride": 4},
        "merge_kernel_sizes": [[2, 4]],
    },
    "regionvit": {
        "type": "regionvit", "image_size": 32, "num_classes": 5, "window_size": 2,
        "dims": [32, 64], "depths": [1, 2], "num_heads": [2, 2],
    },
    "scalable-vit": {
        "type": "scalable-vit", "image_size": 32, "num_classes": 5, "dims": [32, 64],
        "depths": [2, 2], "num_heads": [2, 2], "window_sizes": [4, 2], "reductions": [2, 1],
        "channel_ratios": [1.25, 1.0], "head": {"type": "mlp", "hidden_dim": 32},
    },
    "sepvit": {
        "type": "sepvit", "image_size": 32, "num_classes": 5, "dims": [32, 64],
        "depths": [2, 2], "num_heads": [2, 2], "window_sizes": [[2, 4], [2]],
    },
    "nest": {
        "type": "nest", "image_size": 32, "num_classes": 5, "patch_size": 2, "block_size": 4,
        "dims": [32, 64], "depths": [1, 2], "num_heads": [2, 2],
    },
}  # fmt: skip

#: (C, H, W) of every stage's map for the TINY configs above (RegionViT: the local tokens).
STAGE_SHAPES = {
    "crossformer": [(32, 8, 8), (64, 4, 4)],
    "regionvit": [(32, 8, 8), (64, 4, 4)],
    "scalable-vit": [(32, 8, 8), (64, 4, 4)],
    "sepvit": [(32, 8, 8), (64, 4, 4)],
    "nest": [(32, 16, 16), (64, 8, 8)],
}

#: An image size each TINY config cannot tile, and a word the error must contain.
INDIVISIBLE = {
    "crossformer": (36, "divisible by 8"),
    "regionvit": (40, "divisible by 16"),
    "scalable-vit": (40, "windows of 4"),
    "sepvit": (40, "windows of 4"),
    "nest": (40, "divisible by 16"),
}

#: Other image sizes (square and not) each TINY config accepts.
OTHER_SIZES = {
    "crossformer": [48, (32, 48)],
    "regionvit": [48, (32, 64)],
    "scalable-vit": [64, (32, 64)],
    "sepvit": [64, (64, 32)],
    "nest": [48, (32, 64)],
}


def build(spec: dict, **changes: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return vitzoo.build({"model": {**spec, **changes}}).eval()


def spec_issue(spec: dict) -> object:
    with pytest.raises(SpecError) as info:
        vitzoo.resolve_spec({"model": spec})
    return info.value.issues[0]


@pytest.mark.parametrize("name", list(TINY))
def test_intermediates_are_every_stage_map(name: str) -> None:
    model = build(TINY[name])
    x = torch.randn(2, 3, 32, 32)
    final, maps = model.forward_intermediates(x)
    assert [tuple(m.shape) for m in maps] == [(2, *s) for s in STAGE_SHAPES[name]]
    torch.testing.assert_close(final, model.forward_features(x))
    torch.testing.assert_close(model.forward_head(final), model(x))
    assert model(x).shape == (2, 5)
    assert "feature-maps" in offers_of_model(model, get_registry())
    _, last = model.forward_intermediates(x, indices=[-1])
    torch.testing.assert_close(last[0], maps[-1])


@pytest.mark.parametrize("name", list(TINY))
def test_depth_tuple_of_wrong_length_is_a_spec_error(name: str) -> None:
    depths = list(TINY[name]["depths"])
    issue = spec_issue({**TINY[name], "depths": [*depths, 1]})
    assert issue.path == "model.depths"
    assert "2 stages" in issue.message


@pytest.mark.parametrize("name", list(TINY))
def test_indivisible_image_size_is_a_spec_error(name: str) -> None:
    size, needle = INDIVISIBLE[name]
    issue = spec_issue({**TINY[name], "image_size": size})
    assert issue.path == "model.image_size"
    assert needle in issue.message


@pytest.mark.parametrize(
    ("name", "image_size"), [(n, s) for n, sizes in OTHER_SIZES.items() for s in sizes]
)
def test_other_image_sizes_work(name: str, image_size: int | tuple[int, int]) -> None:
    model = build(TINY[name], image_size=image_size)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert model.input_size == (3, h, w)
    x = torch.randn(1, 3, h, w)
    _, maps = model.forward_intermediates(x)
    assert model(x).shape == (1, 5)
    last_h, last_w = maps[-1].shape[-2:]
    assert last_w * h == last_h * w  # the last map keeps the image's aspect ratio


@pytest.mark.parametrize(
    ("name", "field", "value", "path"),
    [
        ("crossformer", "intervals", [2], "model.intervals"),
        ("crossformer", "merge_kernel_sizes", [[2, 4], [2, 4]], "model.merge_kernel_sizes"),
        ("crossformer", "merge_kernel_sizes", [[2, 3]], "model.merge_kernel_sizes.0"),
        ("scalable-vit", "channel_ratios", [1.25], "model.channel_ratios"),
        ("scalable-vit", "channel_ratios", [1.1, 1.0], "model.channel_ratios.0"),
        ("sepvit", "window_sizes", [[2]], "model.window_sizes"),
        ("nest", "num_heads", [2, 3], "model.num_heads.1"),
        ("regionvit", "dims", [32, 48], "model.dims.1"),
    ],
)
def test_other_stage_rules_name_the_field(name: str, field: str, value: object, path: str) -> None:
    assert spec_issue({**TINY[name], field: value}).path == path


# -- CrossFormer -------------------------------------------------------------------------------
def _changed_positions(attn: torch.nn.Module, grid: tuple[int, int], where: tuple[int, int]):
    """Perturb one token and return the set of grid positions whose output changed."""
    torch.manual_seed(0)
    x = torch.randn(1, grid[0] * grid[1], 8)
    y = x.clone()
    y[0, where[0] * grid[1] + where[1]] += 1.0
    with torch.no_grad():
        diff = (attn(x) - attn(y)).abs().sum(-1).view(*grid)
    return {(i, j) for i in range(grid[0]) for j in range(grid[1]) if diff[i, j] > 1e-6}


def test_short_distance_attention_stays_in_its_window() -> None:
    attn = LongShortDistanceAttention(8, 2, (4, 4), LsdaConfig(mode="short", group_size=2)).eval()
    assert _changed_positions(attn, (4, 4), (0, 0)) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_long_distance_attention_groups_tokens_an_interval_apart() -> None:
    attn = LongShortDistanceAttention(8, 2, (4, 4), LsdaConfig(mode="long", interval=2)).eval()
    assert _changed_positions(attn, (4, 4), (0, 0)) == {(0, 0), (0, 2), (2, 0), (2, 2)}


def test_dynamic_position_bias_does_not_depend_on_image_size() -> None:
    counts = {
        size: sum(p.numel() for p in build(TINY["crossformer"], image_size=size).parameters())
        for size in (32, 64)
    }
    assert counts[32] == counts[64]
    attn = LongShortDistanceAttention(32, 2, (4, 4), LsdaConfig(mode="short", group_size=4))
    assert attn.relative_position().shape == (2, 16, 16)


def test_cross_scale_embedding_gives_small_kernels_more_channels() -> None:
    assert cross_scale_dims(64, 4) == [32, 16, 8, 8]
    assert cross_scale_dims(128, 2) == [64, 64]
    model = build(TINY["crossformer"])
    assert [c.out_channels for c in model.patch.proj.convs] == [16, 16]
    assert [c.kernel_size for c in model.patch.proj.convs] == [(4, 4), (8, 8)]


# -- ScalableViT -------------------------------------------------------------------------------
def test_scalable_self_attention_pools_keys_and_scales_width() -> None:
    attn = ScalableSelfAttention(8, 2, (4, 4), SsaConfig(reduction=2, channel_ratio=1.5)).eval()
    assert attn.q.out_features == attn.k.out_features == 12  # int(8 * 1.5) for q and k
    assert attn.v.out_features == 8  # values keep the model width
    with record_attention(attn) as maps:
        out = attn(torch.randn(2, 16, 8))
    assert out.shape == (2, 16, 8)
    assert tuple(next(iter(maps.values())).shape) == (2, 2, 16, 4)  # 16 queries, 4 pooled keys


def test_interactive_window_attention_lim_links_neighbouring_windows() -> None:
    attn = InteractiveWindowAttention(8, 2, (4, 4), IwsaConfig(window_size=2)).eval()
    # Token (1, 1) sits at a window corner; LIM's 3x3 conv reaches the next windows' edges.
    assert (1, 2) in _changed_positions(attn, (4, 4), (1, 1))
    with torch.no_grad():
        attn.lim.weight.zero_()
    assert _changed_positions(attn, (4, 4), (1, 1)) == {(0, 0), (0, 1), (1, 0), (1, 1)}


# -- SepViT ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("window", "tokens"), [(2, 16), (4, 4), (8, 0)])
def test_sepvit_window_token_count_follows_window_size(window: int, tokens: int) -> None:
    attn = DepthwiseSeparableAttention(8, 2, (8, 8), DssaConfig(window_size=window))
    count = attn.window_tokens.shape[1] if attn.pointwise else 0
    assert count == tokens


def test_sepvit_blocks_cycle_the_stage_window_sizes() -> None:
    model = build(TINY["sepvit"])
    stage0 = [block.attn for block in model.stages[0].blocks]
    assert [a.window for a in stage0] == [(2, 2), (4, 4)]
    assert [a.window_tokens.shape[1] for a in stage0] == [16, 4]  # 8x8 grid
    assert model.stages[1].blocks[1].attn.window_tokens.shape[1] == 4  # 4x4 grid, windows of 2


def test_sepvit_pointwise_attention_mixes_windows() -> None:
    attn = DepthwiseSeparableAttention(8, 2, (4, 4), DssaConfig(window_size=2)).eval()
    with torch.no_grad():
        attn.window_tokens.normal_()
    # DSA alone would keep the perturbation inside window (0, 0); PSA carries it to the others.
    assert (3, 3) in _changed_positions(attn, (4, 4), (0, 0))
    single = DepthwiseSeparableAttention(8, 2, (4, 4), DssaConfig(window_size=4)).eval()
    assert not single.pointwise  # one window: nothing to mix, PSA is skipped


# -- NesT --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "blocks"), [(32, (16, 4)), (48, (36, 9))])
def test_nest_position_tables_follow_the_block_layout(size: int, blocks: tuple) -> None:
    model = build(TINY["nest"], image_size=size)
    shapes = [tuple(level.pos_embed.shape) for level in model.stages]
    assert shapes == [(1, blocks[0], 16, 32), (1, blocks[1], 16, 64)]


def test_block_aggregation_halves_the_map() -> None:
    out = BlockAggregation(8, 16)(torch.randn(2, 8, 12, 12))
    assert out.shape == (2, 16, 6, 6)


def test_nest_attention_stays_inside_blocks() -> None:
    model = build(TINY["nest"])
    with record_attention(model) as maps:
        model(torch.randn(1, 3, 32, 32))
    # level 0: 16 blocks of 4x4 tokens, level 1: 4 blocks; attention is within a block (16 x 16)
    assert {tuple(m.shape) for m in maps.values()} == {(16, 2, 16, 16), (4, 2, 16, 16)}


# -- RegionViT ---------------------------------------------------------------------------------
def test_regionvit_regional_tokens_cover_windows_of_local_tokens() -> None:
    model = build(TINY["regionvit"], image_size=(32, 64))
    features = model.forward_features(torch.randn(1, 3, 32, 64))
    assert features.shape == (1, 64, 2, 4)  # regional map: local 4x8 map / window 2
    _, maps = model.forward_intermediates(torch.randn(1, 3, 32, 64))
    assert [tuple(m.shape[-2:]) for m in maps] == [(8, 16), (4, 8)]


def test_regionvit_local_attention_biases_only_local_pairs() -> None:
    model = build(TINY["regionvit"])
    attn = model.stages[0].blocks[0].attn
    x = torch.randn(3, 5, 32)  # 3 windows of [regional token + 2x2 local tokens]
    with record_attention(attn) as maps:
        attn(x, local_bias=True)
    local = next(iter(maps.values()))
    with record_attention(attn) as maps:
        attn(x)
    plain = next(iter(maps.values()))
    torch.testing.assert_close(local[..., 0, :], plain[..., 0, :])  # the regional row
    assert not torch.allclose(local[..., 1:, 1:], plain[..., 1:, 1:])


def test_regionvit_shares_one_attention_between_regional_and_local_steps() -> None:
    block = build(TINY["regionvit"]).stages[0].blocks[0]
    attentions = [m for m in block.modules() if isinstance(m, MultiHeadAttention)]
    assert len(attentions) == 1


def _dssa_reference(attn: DepthwiseSeparableAttention, x: torch.Tensor) -> torch.Tensor:
    """SepViT's DSA + PSA written out step by step with explicit softmax (no shared helpers)."""
    b, n, c = x.shape
    (h, w), ws, nh = attn.grid, attn.window[0], attn.num_heads
    hd, nw = c // nh, attn.num_windows
    win = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(2, 3).reshape(b, nw, ws * ws, c)
    win = torch.cat([attn.window_tokens.expand(b, -1, -1, -1), win], dim=2)
    q, k, v = attn.qkv(win).reshape(b, nw, -1, 3, nh, hd).permute(3, 0, 1, 4, 2, 5)
    weights = (q @ k.transpose(-2, -1) * hd**-0.5).softmax(-1)
    win = (weights @ v).transpose(2, 3).reshape(b, nw, -1, c) + win
    tokens, maps = win[:, :, 0], win[:, :, 1:]
    tokens = attn.window_token_act(attn.window_token_norm(tokens))
    pq, pk = attn.psa_qk(tokens).reshape(b, nw, 2, nh, hd).permute(2, 0, 3, 1, 4)
    pv = maps.reshape(b, nw, ws * ws, nh, hd).permute(0, 3, 1, 2, 4).reshape(b, nh, nw, -1)
    mixed = ((pq @ pk.transpose(-2, -1) * hd**-0.5).softmax(-1) @ pv).transpose(1, 2)
    mixed = mixed.reshape(b, nw, nh, ws * ws, hd).transpose(2, 3).reshape(b, nw, ws * ws, c)
    out = (mixed + maps).reshape(b, h // ws, w // ws, ws, ws, c).transpose(2, 3).reshape(b, n, c)
    return attn.proj(out)


def test_sepvit_attention_matches_a_step_by_step_reference() -> None:
    torch.manual_seed(0)
    attn = DepthwiseSeparableAttention(8, 2, (4, 6), DssaConfig(window_size=2)).eval()
    with torch.no_grad():
        attn.window_tokens.normal_()
        x = torch.randn(2, 24, 8)
        torch.testing.assert_close(attn(x), _dssa_reference(attn, x))


def test_interactive_window_attention_matches_a_step_by_step_reference() -> None:
    torch.manual_seed(0)
    attn = InteractiveWindowAttention(8, 2, (4, 6), IwsaConfig(window_size=2)).eval()
    x = torch.randn(2, 24, 8)
    b, n, c, ws, nh, hd = 2, 24, 8, 2, 2, 4
    with torch.no_grad():
        q, k, v = attn.qkv(x).reshape(b, n, 3, c).permute(2, 0, 1, 3)

        def to_windows(t: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, nW, heads, ws^2, d)
            t = t.reshape(b, 2, ws, 3, ws, c).transpose(2, 3)
            return t.reshape(b, 6, ws * ws, nh, hd).permute(0, 1, 3, 2, 4)

        q, k, v = to_windows(q), to_windows(k), to_windows(v)
        out = ((q @ k.transpose(-2, -1) * hd**-0.5).softmax(-1) @ v).transpose(2, 3)
        out = out.reshape(b, 2, 3, ws, ws, c).transpose(2, 3).reshape(b, n, c)
        v_map = v.permute(0, 1, 3, 2, 4).reshape(b, 2, 3, ws, ws, c).transpose(2, 3)
        lim = attn.lim(v_map.reshape(b, 4, 6, c).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        torch.testing.assert_close(attn(x), attn.proj(out + lim))
