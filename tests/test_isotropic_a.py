"""Behaviour of the issue-3 (part A) mechanisms: re-attention, talking heads, class attention,
CaiT, T2T, CCT (conv tokenizer, sequence pooling, CCT block), SPT and LSA. Tiny configs only."""

from __future__ import annotations

import pytest
import torch
from shared_specs import CONV_TOKENIZER_3D

import vitzoo
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.introspection import attention_maps, record_attention
from vitzoo.spec import SpecError

TINY = {"image_size": 32, "dim": 32, "depth": 1, "num_heads": 2, "num_classes": 5}
LINEAR8 = {"type": "linear", "patch_size": 8}


def build(model: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return vitzoo.build({"model": model}).eval()


def vit_with(**parts: dict) -> torch.nn.Module:
    return build({"type": "vit", **TINY, "patch": LINEAR8, **parts})


def mhsa_twin(attn: MultiHeadAttention, dim: int = 32) -> MultiHeadAttention:
    """A plain MHSA holding the same q/k/v/proj weights as ``attn``."""
    plain = MultiHeadAttention(dim, attn.num_heads, MhsaConfig(qkv_bias=attn.qkv.bias is not None))
    plain.load_state_dict(attn.state_dict(), strict=False)
    return plain.eval()


# -- talking heads ---------------------------------------------------------------------------------
def test_talking_heads_starts_as_plain_attention_and_mixes_heads() -> None:
    model = vit_with(attention={"type": "talking-heads"})
    attn = model.blocks[0].attn
    x = torch.randn(2, 17, 32)
    plain = mhsa_twin(attn)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), plain(x), atol=1e-5, rtol=1e-5)
        # swap the heads after the softmax: head 0 now carries plain head 1's weights
        attn.mix_weights.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        with record_attention(attn) as mixed, record_attention(plain) as base:
            attn(x), plain(x)
    torch.testing.assert_close(mixed[""][:, 0], base[""][:, 1])
    torch.testing.assert_close(mixed[""][:, 1], base[""][:, 0])


def test_talking_heads_mix_before_softmax_changes_the_distribution() -> None:
    model = vit_with(attention={"type": "talking-heads"})
    attn = model.blocks[0].attn
    x = torch.randn(1, 17, 32)
    with torch.no_grad():
        attn.mix_logits.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
        with record_attention(attn) as maps:
            attn(x)
    rows = maps[""].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))  # still a softmax after pre-mixing


# -- re-attention ----------------------------------------------------------------------------------
def test_re_attention_maps_are_a_learned_combination_of_heads() -> None:
    model = vit_with(attention={"type": "re-attention", "norm": "none"})
    attn = model.blocks[0].attn
    plain = mhsa_twin(attn)
    theta = torch.tensor([[0.3, 0.7], [2.0, -1.0]])
    with torch.no_grad():
        attn.reattn.weight.copy_(theta)
        attn.reattn.bias.fill_(0.1)
        x = torch.randn(2, 17, 32)
        with record_attention(attn) as re_maps, record_attention(plain) as maps:
            attn(x), plain(x)
    expected = torch.einsum("gh,bhnm->bgnm", theta, maps[""]) + 0.1
    torch.testing.assert_close(re_maps[""], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_re_attention_normalises_over_heads(norm: str) -> None:
    model = vit_with(attention={"type": "re-attention", "norm": norm})
    attn = model.blocks[0].attn
    attn.train()
    with record_attention(attn) as maps:
        attn(torch.randn(4, 17, 32))
    out = maps[""]
    if norm == "layer":  # zero mean across heads at every (query, key)
        torch.testing.assert_close(out.mean(dim=1), torch.zeros_like(out[:, 0]), atol=1e-5, rtol=0)
    else:  # BatchNorm in training: zero mean per head over batch and positions
        torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)


# -- class attention / CaiT ------------------------------------------------------------------------
def test_class_attention_block_leaves_patch_tokens_untouched() -> None:
    model = vit_with(block={"type": "class-attention", "layer_scale": 1.0})
    block = model.blocks[0]
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        out = block(x)
    assert torch.equal(out[:, 1:], x[:, 1:])
    assert not torch.allclose(out[:, :1], x[:, :1])


def test_class_attention_equals_the_class_row_of_full_attention() -> None:
    model = vit_with(block={"type": "class-attention"})
    attn = model.blocks[0].attn
    plain = mhsa_twin(attn)
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), plain(x)[:, :1], atol=1e-5, rtol=1e-5)
        maps = attention_maps(model, torch.randn(1, 3, 32, 32))
    assert maps["blocks.0.attn"].shape == (1, 2, 1, 17)  # one query (cls) over all 17 tokens


def test_cait_class_token_enters_late() -> None:
    model = build({"type": "cait", **TINY, "depth": 2, "cls_depth": 2, "patch": LINEAR8})
    assert model.num_prefix_tokens == 1
    assert model.posenc.pos_embed.shape == (1, 16, 32)  # positions for patches only
    x = torch.randn(2, 3, 32, 32)
    tokens, _ = model.embed(x)
    assert tokens.shape == (2, 16, 32)  # the self-attention stage sees no class token
    with torch.no_grad():
        feats = model.forward_features(x)
        final, inter = model.forward_intermediates(x)
        last = model.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True)
    assert feats.shape == (2, 17, 32)
    # feature layers are the self-attention blocks; their maps hold patch tokens only
    assert [tuple(t.shape) for t in inter] == [(2, 32, 4, 4)] * 2
    torch.testing.assert_close(final, feats)
    # the class stage leaves the patch tokens of the self-attention stage as they were
    torch.testing.assert_close(final[:, 1:], model.norm(last[0]))
    assert model(x).shape == (2, 5)


def test_cait_spec_errors() -> None:
    with pytest.raises(SpecError, match="cls_depth"):
        vitzoo.build({"model": {"type": "cait", **TINY, "cls_depth": 0, "patch": LINEAR8}})
    with pytest.raises(SpecError, match="distillation_token"):
        vitzoo.build(
            {"model": {"type": "cait", **TINY, "distillation_token": True, "patch": LINEAR8}}
        )
    with pytest.raises(SpecError, match="class token"):
        vitzoo.build(
            {
                "model": {
                    "type": "vit",
                    **TINY,
                    "patch": LINEAR8,
                    "class_token": False,
                    "pool": {"type": "mean"},
                    "block": {"type": "class-attention"},
                }
            }
        )


# -- sequence pooling / CCT ------------------------------------------------------------------------
def test_seq_pool_weights_sum_to_one_and_average_the_tokens() -> None:
    model = build({"type": "cct", **TINY, "patch": {"type": "conv-tokenizer", "stride": 2}})
    pool = model.pool
    tokens = torch.randn(3, 10, 32)
    weights = pool.weights(tokens)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    torch.testing.assert_close(pool(tokens, 0), (weights.unsqueeze(-1) * tokens).sum(1))
    same = torch.randn(1, 1, 32).expand(2, 7, 32)
    torch.testing.assert_close(pool(same, 0), same[:, 0])


def test_conv_tokenizer_grid_matches_its_output_2d_and_3d() -> None:
    model = build({"type": "cct", **TINY, "patch": {"type": "conv-tokenizer", "num_layers": 2}})
    tokens, grid = model.patch(torch.randn(1, 3, 32, 32))
    assert grid == model.patch.grid_for((32, 32)) == (8, 8)
    assert tokens.shape == (1, 64, 32)
    video = build(
        {
            "type": "vit3d",
            **TINY,
            "frames": 4,
            "patch": dict(CONV_TOKENIZER_3D),
        }
    )
    tokens, grid = video.patch(torch.randn(1, 3, 4, 32, 32))
    assert grid == video.patch.grid_for((4, 32, 32)) == (2, 8, 8)
    assert tokens.shape == (1, 128, 32)
    assert video(torch.randn(2, 3, 4, 32, 32)).shape == (2, 5)


def test_conv_tokenizer_rejects_an_empty_grid_at_spec_time() -> None:
    with pytest.raises(SpecError, match=r"model\.patch\.num_layers"):
        vitzoo.build(
            {
                "model": {
                    "type": "cct",
                    **TINY,
                    "image_size": 8,
                    "patch": {"type": "conv-tokenizer", "num_layers": 4, "stride": 2, "padding": 0},
                }
            }
        )


def test_cct_block_normalises_the_residual_stream() -> None:
    model = build({"type": "cct", **TINY, "patch": {"type": "conv-tokenizer", "stride": 2}})
    block = model.blocks[0]
    x = torch.randn(2, 64, 32) * 5 + 3
    with torch.no_grad():
        after_attention = block.norm1(x + block.attn(block.pre_norm(x)))
        torch.testing.assert_close(block(x), after_attention + block.mlp(after_attention))


# -- T2T -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["performer", "transformer"])
def test_t2t_grid_and_token_layers(layer: str) -> None:
    model = build(
        {"type": "t2t-vit", **TINY, "patch": {"type": "t2t", "token_dim": 16, "token_layer": layer}}
    )
    assert model.patch.grid_for((224, 224)) == (14, 14)  # the paper's 224 -> 56 -> 28 -> 14
    tokens, grid = model.patch(torch.randn(2, 3, 32, 32))
    assert grid == (2, 2) and tokens.shape == (2, 4, 32)
    assert len(model.patch.token_layers) == 2
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_t2t_performer_and_transformer_differ_only_by_qkv_biases() -> None:
    counts = {}
    for layer in ("performer", "transformer"):
        with torch.device("meta"):
            m = vitzoo.build(
                {
                    "model": {
                        "type": "t2t-vit",
                        "image_size": 224,
                        "patch": {"type": "t2t", "token_layer": layer},
                    }
                }
            )
        counts[layer] = sum(p.numel() for p in m.patch.parameters())
    # the performer's q/k/v/proj carry biases the softmax layer does not: 3*64 per token layer
    assert counts["performer"] - counts["transformer"] == 2 * 3 * 64


def test_t2t_transformer_token_attention_is_recordable() -> None:
    model = build(
        {
            "type": "t2t-vit",
            **TINY,
            "patch": {"type": "t2t", "token_dim": 16, "token_layer": "transformer"},
        }
    )
    maps = attention_maps(model, torch.randn(1, 3, 32, 32))
    assert maps["patch.token_layers.0.attn"].shape == (1, 1, 64, 64)  # one head over 8x8 tokens


def test_t2t_rejects_an_empty_grid_at_spec_time() -> None:
    with pytest.raises(SpecError, match=r"model\.patch\.splits"):
        vitzoo.build({"model": {"type": "t2t-vit", **TINY, "image_size": 2}})


# -- SPT and LSA -----------------------------------------------------------------------------------
def test_spt_shape_and_shifts() -> None:
    model = vit_with(patch={"type": "spt", "patch_size": 8})
    spt = model.patch
    x = torch.zeros(1, 3, 32, 32)
    x[..., 10, 10] = 1.0
    stacked = spt.shifted_stack(x)
    assert stacked.shape == (1, 15, 32, 32)
    assert torch.equal(stacked[:, :3], x)
    # the four copies are translated by half a patch (4 px) along the diagonals
    for copy, (dy, dx) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1)), start=1):
        where = stacked[0, 3 * copy].nonzero().tolist()
        assert where == [[10 + 4 * dy, 10 + 4 * dx]]
    tokens, grid = spt(torch.randn(2, 3, 32, 32))
    assert grid == (4, 4) and tokens.shape == (2, 16, 32)
    assert spt.norm.normalized_shape == (15 * 8 * 8,)


def test_lsa_masks_the_diagonal_and_learns_its_temperature() -> None:
    model = vit_with(attention={"type": "lsa"})
    x = torch.randn(2, 3, 32, 32)
    maps = attention_maps(model, x)["blocks.0.attn"]
    diagonal = maps.diagonal(dim1=-2, dim2=-1)
    assert torch.all(diagonal == 0)
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    with torch.no_grad():  # the SDPA path (no maps recorded) computes the same thing
        torch.testing.assert_close(model(x), model(x))
        with record_attention(model):
            explicit = model(x)
        torch.testing.assert_close(model(x), explicit, atol=1e-5, rtol=1e-5)
    attn = model.blocks[0].attn
    torch.testing.assert_close(attn.log_temperature.exp(), torch.tensor(16.0**0.5))
    model.train()
    model(x).sum().backward()
    assert attn.log_temperature.grad is not None and attn.log_temperature.grad != 0


def test_lsa_keeps_a_key_padding_mask() -> None:
    model = vit_with(attention={"type": "lsa"})
    attn = model.blocks[0].attn
    mask = torch.ones(1, 17, dtype=torch.bool)
    mask[:, -3:] = False
    with record_attention(attn) as maps:
        attn(torch.randn(1, 17, 32), mask=mask)
    assert torch.all(maps[""][..., -3:] == 0)
    assert torch.all(maps[""].diagonal(dim1=-2, dim2=-1) == 0)


def test_t2t_vit_uses_1d_sinusoid_positions_over_the_whole_sequence() -> None:
    model = build({"type": "t2t-vit", **TINY, "patch": {"type": "t2t", "token_dim": 16}})
    assert model.posenc.layout == "sequence"
    tokens = torch.zeros(1, 5, 32)  # [cls, 4 patches]
    out = model.posenc(tokens, (2, 2), 1)
    assert out[0, 0].abs().sum() > 0  # the class token gets position 0's code
    torch.testing.assert_close(out[0, 0, :16], torch.zeros(16))  # sin(0) half of position 0
    assert not any(p.requires_grad for p in model.posenc.parameters())


def test_cait_patch_dropout_keeps_the_late_class_token() -> None:
    model = build(
        {"type": "cait", **TINY, "cls_depth": 1, "patch_dropout": 0.5, "patch": LINEAR8}
    ).train()
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 1 + 8, 32)  # class token + half of the 16 patches
