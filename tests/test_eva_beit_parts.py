"""The parts EVA-02 and BEiT brought (issues 21, 22), each an option or component usable in any
spec: the post-pool norm, q/v biases with the key's fixed at zero, an output projection without
bias, SwiGLU with a norm before ``fc2``, EVA-02's RoPE layout, and the whole-sequence relative
position bias. Their families' fidelity tests are tests/test_eva.py and tests/test_beit.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitzoo
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.class_attention import ClassAttention
from vitzoo.components.relative_position import sequence_position_index
from vitzoo.components.resample import geometric_offsets, resize_relative_table_geometric
from vitzoo.components.rope import Rotary2d
from vitzoo.components.windows import relative_position_index
from vitzoo.errors import SpecError
from vitzoo.registration_examples import TINY_VIT


def tiny(**model: Any) -> dict[str, Any]:
    return {"model": {"type": "vit", **TINY_VIT, **model}}


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return module


# -- post-pool norm (fc_norm) -------------------------------------------------------------------
def test_fc_norm_normalises_the_pooled_vector_before_the_head() -> None:
    model = randomise(
        vitzoo.build(tiny(fc_norm=True, final_norm=False, pool={"type": "mean"}))
    ).eval()
    assert "fc_norm.weight" in model.state_dict()
    assert "fc_norm.weight" not in vitzoo.build(tiny()).state_dict()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = F.layer_norm(
            tokens[:, 1:].mean(1), (32,), model.fc_norm.weight, model.fc_norm.bias, eps=1e-6
        )
        assert torch.allclose(model.forward_head(tokens, pre_logits=True), pooled)
        assert torch.allclose(model(x), model.head.fc(pooled), atol=1e-6)


def test_pruning_the_head_drops_the_post_pool_norm() -> None:
    model = vitzoo.build(tiny(fc_norm=True, final_norm=False, pool={"type": "mean"}))
    model.prune_intermediate_layers(indices=[0])
    assert isinstance(model.fc_norm, nn.Identity)


# -- attention projections ----------------------------------------------------------------------
def test_key_bias_false_gives_q_and_v_biases_and_a_key_bias_fixed_at_zero() -> None:
    """Same function as a full-bias attention whose key bias is zero; no key-bias parameter
    exists, so it cannot train; q_bias and v_bias get gradients."""
    qv = randomise(MultiHeadAttention(32, 2, MhsaConfig(key_bias=False)))
    names = {n for n, _ in qv.named_parameters()}
    assert {"q_bias", "v_bias", "qkv.weight"} <= names and "qkv.bias" not in names
    full = MultiHeadAttention(32, 2, MhsaConfig())
    full.load_state_dict(
        {
            **{k: v for k, v in qv.state_dict().items() if not k.endswith("_bias")},
            "qkv.bias": torch.cat((qv.q_bias, torch.zeros(32), qv.v_bias)).detach(),
        }
    )
    x = torch.randn(2, 5, 32)
    assert torch.allclose(qv(x), full(x), atol=1e-6)
    qv(x).sum().backward()
    assert qv.q_bias.grad.abs().sum() > 0 and qv.v_bias.grad.abs().sum() > 0


def test_a_key_bias_never_changed_attention_anyway() -> None:
    """Why BEiT and EVA drop it: q . b_k is the same for every key of a query's row, which the
    softmax cancels (float64, so only rounding is left)."""
    attn = randomise(MultiHeadAttention(32, 2, MhsaConfig())).double()
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    before = attn(x)
    with torch.no_grad():
        attn.qkv.bias[32:64].normal_()
    assert torch.allclose(attn(x), before, atol=1e-12)


def test_class_attention_honours_the_q_v_biases() -> None:
    qv = randomise(ClassAttention(32, 2, MhsaConfig(key_bias=False)))
    full = ClassAttention(32, 2, MhsaConfig())
    full.load_state_dict(
        {
            **{k: v for k, v in qv.state_dict().items() if not k.endswith("_bias")},
            "qkv.bias": torch.cat((qv.q_bias, torch.zeros(32), qv.v_bias)).detach(),
        }
    )
    x = torch.randn(2, 5, 32)
    assert torch.allclose(qv(x), full(x), atol=1e-6)


def test_proj_bias_false_leaves_the_output_projection_without_bias() -> None:
    model = vitzoo.build(tiny(attention={"type": "mhsa", "proj_bias": False}))
    keys = model.state_dict()
    assert "blocks.0.attn.proj.weight" in keys and "blocks.0.attn.proj.bias" not in keys


# -- SwiGLU with a norm before fc2 --------------------------------------------------------------
def test_swiglu_norm_normalises_the_gated_hidden_units() -> None:
    model = vitzoo.build(tiny(mlp={"type": "swiglu", "hidden_dim": 24, "norm": "layernorm"}))
    mlp = randomise(model.blocks[0].mlp)
    x = torch.randn(2, 5, 32)
    gate, linear = mlp.fc1(x).chunk(2, dim=-1)
    hidden = F.layer_norm(F.silu(gate) * linear, (24,), mlp.norm.weight, mlp.norm.bias, 1e-6)
    assert torch.allclose(mlp(x), mlp.fc2(hidden), atol=1e-6)
    plain = vitzoo.build(tiny(mlp={"type": "swiglu", "hidden_dim": 24}))
    count = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert count == 2 * 24 * 2  # weight and bias of the norm, in both blocks


# -- EVA-02's RoPE layout -----------------------------------------------------------------------
def test_halves_pairs_rotate_like_adjacent_pairs_on_permuted_channels() -> None:
    """Channel i with i + d/2 is the adjacent rotation after interleaving the two halves."""
    d = 16
    adjacent = Rotary2d(d, 2, (3, 4), 1, theta=10000.0)
    halves = Rotary2d(d, 2, (3, 4), 1, theta=10000.0, pairs="halves")
    interleave = torch.arange(d).reshape(2, d // 2).t().reshape(-1)  # 0, 8, 1, 9, ...
    t = torch.randn(2, 2, 13, d)
    assert torch.equal(halves(t)[..., interleave], adjacent(t[..., interleave]))
    assert not torch.allclose(halves(t), adjacent(t))


def test_y_first_is_x_first_on_the_transposed_grid() -> None:
    y_first = Rotary2d(16, 2, (3, 4), 0, axis_order="y-first")
    x_first = Rotary2d(16, 2, (4, 3), 0)
    transposed = torch.arange(12).reshape(3, 4).t().reshape(-1)  # (r, c) of 3x4 -> (c, r) of 4x3
    order = torch.argsort(transposed)
    assert torch.equal(y_first.cos, x_first.cos[order])
    assert torch.equal(y_first.sin, x_first.sin[order])


def test_ref_grid_rescales_coordinates_to_the_reference_grid() -> None:
    """An 8 x 8 grid with a 16 x 16 reference rotates token (r, c) as token (2r, 2c) of an
    unscaled 16 x 16 grid: fine-tunes at twice the size keep the pre-training rotation."""
    scaled = Rotary2d(16, 2, (8, 8), 0, axis_order="y-first", ref_grid=(16, 16))
    plain = Rotary2d(16, 2, (16, 16), 0, axis_order="y-first")
    even = (torch.arange(0, 16, 2)[:, None] * 16 + torch.arange(0, 16, 2)).reshape(-1)
    assert torch.allclose(scaled.cos, plain.cos[even]) and torch.allclose(
        scaled.sin, plain.sin[even]
    )
    moved = copy.deepcopy(scaled)
    moved.follow_grid((4, 4))  # dynamic sizes keep the reference
    assert torch.allclose(
        moved.cos,
        plain.cos[(torch.arange(0, 16, 4)[:, None] * 16 + torch.arange(0, 16, 4)).reshape(-1)],
    )


def test_rope_mixed_refuses_an_axis_order() -> None:
    with pytest.raises(SpecError, match="axis_order"):
        vitzoo.build(tiny(attention={"type": "rope", "rope": "mixed", "axis_order": "y-first"}))


@pytest.mark.parametrize("attention", ["rope", "rel-pos"])
def test_grid_bound_attentions_refuse_patch_dropout_at_spec_time(attention: str) -> None:
    with pytest.raises(SpecError, match="patch"):
        vitzoo.build(tiny(attention={"type": attention}, patch_dropout=0.5))


# -- whole-sequence relative position bias (BEiT) -----------------------------------------------
def test_the_sequence_index_has_the_three_prefix_entries() -> None:
    grid = (2, 3)
    table = 3 * 5
    patches = relative_position_index(grid)
    index = sequence_position_index(grid, 1)
    assert torch.equal(index[1:, 1:], patches)
    assert (index[0, 1:] == table).all() and (index[1:, 0] == table + 1).all()
    assert index[0, 0] == table + 2
    two = sequence_position_index(grid, 2)
    assert (two[:2, :2] == table + 2).all() and (two[:2, 2:] == table).all()
    assert (two[2:, :2] == table + 1).all()
    assert torch.equal(sequence_position_index(grid, 0), patches)


def test_rel_pos_attention_without_prefix_tokens_has_no_prefix_entries() -> None:
    model = vitzoo.build(
        tiny(attention={"type": "rel-pos"}, class_token=False, pool={"type": "mean"})
    )
    keys = model.state_dict()
    assert "blocks.0.attn.relative_position.relative_position_bias_table" in keys
    assert "blocks.0.attn.relative_position.prefix_bias" not in keys
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_rel_pos_attention_refuses_dynamic_img_size() -> None:
    with pytest.raises(SpecError, match="dynamic_img_size"):
        vitzoo.build(tiny(attention={"type": "rel-pos"}, dynamic_img_size=True))


def test_geometric_offsets_reach_the_new_extent() -> None:
    """13 offsets (a 7-wide window) spread over 19 (a 10-wide one): symmetric, 0 in the
    middle, gaps growing outwards, the outermost at the new reach (9) up to the bisection's
    tolerance (the ratio is searched in [1.01, 1.5], so a far larger window is not reached)."""
    offsets = geometric_offsets(13, 19)
    assert len(offsets) == 13 and offsets[6] == 0.0
    assert offsets == [-o for o in reversed(offsets)]
    gaps = [b - a for a, b in zip(offsets[6:], offsets[7:], strict=False)]
    assert gaps == sorted(gaps) and abs(offsets[-1] - 9) < 1e-4


def test_geometric_resampling_keeps_a_same_size_table_and_works_on_meta() -> None:
    table = torch.randn(15, 2)
    assert resize_relative_table_geometric(table, (2, 3), (2, 3)) is table
    resized = resize_relative_table_geometric(table, (2, 3), (4, 5))
    assert resized.shape == (63, 2) and torch.isfinite(resized).all()
    on_meta = resize_relative_table_geometric(table.to("meta"), (2, 3), (4, 5))
    assert on_meta.is_meta and on_meta.shape == (63, 2)


def test_relative_position_tables_are_not_weight_decayed() -> None:
    """BEiT's fine-tuning recipe (timm's Beit.no_weight_decay) leaves the tables undecayed."""
    model = vitzoo.build(tiny(attention={"type": "rel-pos"}))
    names = model.no_weight_decay()
    assert "blocks.0.attn.relative_position.relative_position_bias_table" in names
    assert "blocks.1.attn.relative_position.prefix_bias" in names
    assert "blocks.0.attn.qkv.weight" not in names


# -- what objectives do to the tokens -------------------------------------------------------------
MAE = {"type": "mae", "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}


@pytest.mark.parametrize(
    "model",
    [
        {"type": "beit", **TINY_VIT},
        {"type": "eva02", **TINY_VIT},
        {"type": "vit", **TINY_VIT, "attention": {"type": "rope"}},
    ],
    ids=["beit", "eva02", "vit+rope"],
)
def test_mae_is_refused_where_a_part_needs_every_token(model: dict[str, Any]) -> None:
    """MAE's encoder sees a subset of the patch tokens; RoPE and BEiT's bias are fitted to the
    whole grid, so the spec is refused (a plain sentence), not run into a shape error."""
    with pytest.raises(SpecError, match="encodes a subset of the patch tokens"):
        vitzoo.resolve_spec({"model": model, "objective": MAE})


def test_masked_image_objectives_that_keep_every_token_take_them() -> None:
    vitzoo.resolve_spec({"model": {"type": "vit", **TINY_VIT}, "objective": MAE})
    vitzoo.resolve_spec({"model": {"type": "beit", **TINY_VIT}, "objective": {"type": "simmim"}})
