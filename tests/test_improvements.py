"""Issue 10's efficient attentions and transformer improvements: the maths each one promises.

Conformance in several hosts lives in tests/test_cross_combinations.py; here each mechanism is
held to its defining property (RoPE is relative, Performer approximates softmax attention,
Linformer with an identity projection is exact attention, gated MLPs gate).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from vitzoo_plugins.efficient_attention import (
    LinformerAttention,
    LinformerConfig,
    PerformerAttention,
    PerformerConfig,
)

import vitzoo
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.favor import linear_attention, positive_random_features
from vitzoo.components.mlp import GatedMlp, SwigluConfig
from vitzoo.components.rope import Rotary2d

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def copy_projections(src: MultiHeadAttention, dst: MultiHeadAttention) -> None:
    dst.qkv.load_state_dict(src.qkv.state_dict())
    dst.proj.load_state_dict(src.proj.state_dict())


@pytest.mark.parametrize("kind", ["axial", "mixed"])
def test_rope_scores_depend_only_on_relative_offset(kind: str) -> None:
    torch.manual_seed(0)
    rope = Rotary2d(head_dim=8, num_heads=2, grid=(4, 4), num_prefix=0, kind=kind)
    q, k = torch.randn(8), torch.randn(8)
    tokens_q = q.expand(1, 2, 16, 8)
    tokens_k = k.expand(1, 2, 16, 8)
    scores = rope(tokens_q) @ rope(tokens_k).transpose(-2, -1)  # (1, 2, 16, 16)
    # (row 0, col 0) -> (row 1, col 2) and (row 2, col 1) -> (row 3, col 3): same offset (1, 2)
    assert torch.allclose(scores[0, :, 0, 6], scores[0, :, 9, 15], atol=1e-5)
    assert not torch.allclose(scores[0, :, 0, 6], scores[0, :, 0, 1], atol=1e-3)


def test_rope_leaves_prefix_tokens_and_norms_alone() -> None:
    rope = Rotary2d(head_dim=8, num_heads=1, grid=(2, 3), num_prefix=2)
    x = torch.randn(3, 1, 8, 8)
    out = rope(x)
    assert torch.equal(out[:, :, :2], x[:, :, :2])
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation
    with pytest.raises(ValueError, match="3x... grid|2x3 token grid"):
        rope(torch.randn(1, 1, 9, 8))


def test_rope_attention_rejects_head_width_not_divisible_by_four() -> None:
    with pytest.raises(vitzoo.SpecError, match="multiple of 4"):
        vitzoo.build(
            {
                "model": {
                    "type": "vit",
                    "image_size": 32,
                    "dim": 36,
                    "num_heads": 6,
                    "depth": 1,
                    "patch": {"type": "linear", "patch_size": 8},
                    "attention": {"type": "rope"},
                }
            }
        )


def test_performer_approximates_softmax_attention() -> None:
    torch.manual_seed(0)
    exact = MultiHeadAttention(32, 2, MhsaConfig()).eval()
    approx = PerformerAttention(32, 2, PerformerConfig(num_features=4096)).eval()
    copy_projections(exact, approx)
    x = torch.randn(2, 17, 32) * 0.5
    with torch.no_grad():
        want, got = exact(x), approx(x)
    relative = ((got - want).norm() / want.norm()).item()
    assert relative < 0.05, relative


def test_linformer_with_identity_projection_is_exact_attention() -> None:
    torch.manual_seed(0)
    registry = vitzoo.get_registry()
    ctx = BuildContext(registry=registry, dim=32, num_heads=2, grid=(3, 3), num_prefix_tokens=1)
    exact = MultiHeadAttention(32, 2, MhsaConfig()).eval()
    low_rank = LinformerAttention(LinformerConfig(proj_len=10), ctx).eval()
    copy_projections(exact, low_rank)
    with torch.no_grad():
        low_rank.proj_k.copy_(torch.eye(10))
        low_rank.proj_v.copy_(torch.eye(10))
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(low_rank(x), exact(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="built for 10 tokens, got 7"):
        low_rank(x[:, :7])


def test_t2t_performer_token_layer_keeps_its_function() -> None:
    """The shared FAVOR+ maths gives what T2T's einsum formulation gave."""
    torch.manual_seed(0)
    k, q, v = torch.randn(3, 2, 9, 16).unbind(0)
    w = torch.randn(8, 16)

    def old_features(x: torch.Tensor) -> torch.Tensor:
        projected = torch.einsum("bnd,md->bnm", x, w)
        return torch.exp(projected - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(8)

    kp, qp = old_features(k), old_features(q)
    normaliser = torch.einsum("bnm,bm->bn", qp, kp.sum(dim=1)).unsqueeze(-1)
    context = torch.einsum("bnd,bnm->bdm", v, kp)
    old = torch.einsum("bnm,bdm->bnd", qp, context) / (normaliser + 1e-8)
    new = linear_attention(positive_random_features(q, w), positive_random_features(k, w), v)
    torch.testing.assert_close(new, old, atol=1e-6, rtol=1e-5)


def test_swiglu_gates_and_matches_the_plain_mlp_parameter_budget() -> None:
    mlp = GatedMlp(48, SwigluConfig())
    plain = 2 * 48 * 4 * 48 + 4 * 48 + 48
    gated = sum(p.numel() for p in mlp.parameters())
    assert abs(gated - plain) / plain < 0.01
    x = torch.randn(2, 5, 48)
    gate, linear = mlp.fc1(x).chunk(2, dim=-1)
    torch.testing.assert_close(mlp(x), mlp.fc2(nn.functional.silu(gate) * linear))


def test_rmsnorm_is_chosen_wherever_a_norm_is() -> None:
    model = vitzoo.build(
        {
            "model": {
                "type": "vit",
                "image_size": 32,
                "dim": 32,
                "depth": 1,
                "num_heads": 2,
                "patch": {"type": "linear", "patch_size": 8},
                "norm": "rmsnorm",
                "block": {"type": "pre-norm", "norm": "rmsnorm"},
                "attention": {"type": "mhsa", "qk_norm": True, "qk_norm_type": "rmsnorm"},
            }
        }
    )
    kinds = {type(m) for m in model.modules()}
    assert nn.RMSNorm in kinds and nn.LayerNorm not in kinds


def test_modern_vit_example_combines_them() -> None:
    model = vitzoo.build(
        EXAMPLES / "modern-vit.yaml",
        image_size=32,
        dim=32,
        depth=2,
        num_heads=2,
        **{"model.patch.patch_size": 8},
    )
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    counts = vitzoo.build(EXAMPLES / "modern-vit.yaml")  # full size on CPU is fine (22M)
    assert 20e6 < sum(p.numel() for p in counts.parameters()) < 24e6
