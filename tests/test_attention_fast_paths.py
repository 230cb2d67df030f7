"""Speed paths of AttentionBase.attend and the cached LeViT attention bias give the same maths.

``attend`` routes CPU inputs whose value heads are wider than the key heads (LeViT) to the
explicit softmax, and lifts a (H, N, N) bias to (1, H, N, N) for SDPA; LeViT reuses its gathered
bias while autograd is off. Each must match the plain formula, and the cache must notice weight
changes. Tiny shapes only.
"""

from __future__ import annotations

import torch

import vitzoo
from vitzoo.components.attention import AttentionBase
from vitzoo.components.inference_cache import InferenceCache

LEVIT = {
    "type": "levit", "image_size": 64, "dims": [32, 48], "depths": [1, 1],
    "num_heads": [2, 3], "key_dim": 8, "num_classes": 5,
}  # fmt: skip


def reference(q, k, v, scale, bias=None, mask=None):
    logits = q @ k.transpose(-2, -1) * scale
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits.softmax(-1) @ v


def test_attend_matches_the_formula_for_wide_values_and_3d_bias() -> None:
    torch.manual_seed(0)
    attn = AttentionBase()
    q, k = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 12, 8)
    bias = torch.randn(3, 10, 12)
    mask = torch.rand(2, 1, 1, 12) > 0.3
    mask[..., 0] = True
    for v in (torch.randn(2, 3, 12, 16), torch.randn(2, 3, 12, 8)):  # explicit, then SDPA
        expected = reference(q, k, v, 8**-0.5, bias, mask)
        torch.testing.assert_close(attn.attend(q, k, v, mask[:, 0, 0], bias=bias), expected)
        torch.testing.assert_close(
            attn.attend(q, k, v, bias=bias), reference(q, k, v, 8**-0.5, bias)
        )


def test_explicit_attend_gradients_match_the_formula() -> None:
    torch.manual_seed(0)
    leaves = [torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 8)]
    bias = torch.randn(2, 6, 6)
    grads = []
    for fn in (lambda q, k, v, b: AttentionBase().attend(q, k, v, scale=0.3, bias=b), reference):
        inputs = [t.clone().requires_grad_() for t in (*leaves, bias)]
        out = fn(*inputs[:3], 0.3, inputs[3]) if fn is reference else fn(*inputs)
        out.square().sum().backward()
        grads.append([t.grad for t in inputs])
    for new, old in zip(*grads, strict=True):
        torch.testing.assert_close(new, old)


def test_inference_cache_recomputes_after_in_place_change_and_under_autograd() -> None:
    table = torch.nn.Parameter(torch.zeros(3))
    calls = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return table * 2

    cache = InferenceCache()
    with torch.no_grad():
        first = cache.get(compute, table)
        assert cache.get(compute, table) is first and len(calls) == 1
        table.add_(1)  # bumps the version counter, like an optimizer step or load_state_dict
        torch.testing.assert_close(cache.get(compute, table), torch.full((3,), 2.0))
    assert len(calls) == 2
    assert cache.get(compute, table).requires_grad and len(calls) == 3  # autograd: no cache


def test_levit_cached_bias_follows_loaded_weights() -> None:
    torch.manual_seed(0)
    model = vitzoo.build({"model": LEVIT}).eval()
    with torch.no_grad():  # residual branches start at zero BN gain: open them
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        before = model(x)
    state = {
        k: v + torch.randn_like(v) if "attention_biases" in k else v
        for k, v in model.state_dict().items()
    }
    fresh = vitzoo.build({"model": LEVIT}).eval()
    fresh.load_state_dict(state)
    model.load_state_dict(state)
    with torch.inference_mode():
        after = model(x)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, fresh(x), rtol=1e-5, atol=1e-9)  # logits are ~1e-6
    with torch.no_grad():  # an edit through .data bumps no version: eval() drops the cache
        for name, p in model.named_parameters():
            if "attention_biases" in name:
                p.data.zero_()
        model.eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(x), fresh(x), rtol=1e-5, atol=1e-9)


def test_in_place_gelu_is_gelu_and_only_in_place_without_autograd():
    from vitzoo.components.conv import InplaceGelu, make_activation

    act = make_activation("gelu-tanh", inplace=True)
    assert isinstance(act, InplaceGelu) and act.approximate == "tanh"
    x = torch.randn(2, 3, 4, 4)
    expected = torch.nn.functional.gelu(x, approximate="tanh")
    with torch.no_grad():
        y = x.clone()
        out = act(y)
    assert out.data_ptr() == y.data_ptr() and torch.equal(out, expected)
    leaf = x.clone().requires_grad_()
    z = leaf * 1.0
    out = act(z)
    assert out.data_ptr() != z.data_ptr() and torch.equal(out, expected)
    out.sum().backward()
    ref = x.clone().requires_grad_()
    torch.nn.functional.gelu(ref, approximate="tanh").sum().backward()
    assert torch.equal(leaf.grad, ref.grad)


def test_maxvit_channels_last_path_computes_the_nchw_function():
    """MaxViT runs channels-last from its stem (speed); the function is the NCHW one."""
    import types

    from vitzoo.components.hierarchical import HierarchicalModel

    torch.manual_seed(0)
    spec = {"type": "maxvit", "image_size": 32, "stem_dim": 16, "dims": [16, 32],
            "depths": [1, 1], "head_dim": 8, "window_size": 2, "grid_size": 2,
            "num_classes": 5}  # fmt: skip
    model = vitzoo.build({"model": spec}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = model(x)
        maps = model.forward_intermediates(x, intermediates_only=True)
        model.run_stem = types.MethodType(HierarchicalModel.run_stem, model)
        plain = model(x)
    assert torch.allclose(fast, plain, atol=1e-6, rtol=0)
    assert all(m.is_contiguous(memory_format=torch.channels_last) for m in maps)
