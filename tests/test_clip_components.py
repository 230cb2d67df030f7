"""The parts CLIP and SigLIP brought, each usable in any spec: ``norm_pre``, the ``map``
attention-pool pooling (with a key-padding mask), the ``projection`` head, ``quick-gelu`` and
the linear patchifier's ``crop_remainder``; and ``examples/cait-map-head.yaml``, a CaiT with
SigLIP's head, which builds and trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import vitzoo
from tests.training_helpers import make_dataset
from vitzoo.components.attention_pool import MapPool
from vitzoo.components.mlp import ACTIVATIONS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY: dict[str, Any] = {
    "type": "vit",
    "image_size": 32,
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 5,
    "patch": {"type": "linear", "patch_size": 8},
}


def build(**model: Any) -> torch.nn.Module:
    return vitzoo.build({"model": {**TINY, **model}}).eval()


def jitter(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def test_quick_gelu_is_x_sigmoid_1702x() -> None:
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    torch.testing.assert_close(ACTIVATIONS["quick-gelu"]()(x), x * torch.sigmoid(1.702 * x))


def test_norm_pre_normalises_every_token_before_the_blocks() -> None:
    model = build(norm_pre=True)
    tokens, _ = model.embed(torch.randn(2, 3, 32, 32))
    assert tokens.shape == (2, 17, 32)  # class token included
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 17), atol=1e-5, rtol=0)
    plain = build()
    assert "norm_pre.weight" in model.state_dict() and "norm_pre.weight" not in plain.state_dict()


def test_map_pool_key_padding_mask_leaves_padding_out() -> None:
    """Masked tokens do not move the pooled vector; an all-True mask is no mask; the mask
    covers the whole sequence and is cut with the prefix tokens the probe leaves out."""
    model = jitter(build(pool={"type": "map"}))
    pool = model.pool
    assert isinstance(pool, MapPool)
    tokens = torch.randn(3, 17, 32)
    mask = torch.ones(3, 17, dtype=torch.bool)
    mask[:, 12:] = False
    changed = tokens.clone()
    changed[:, 12:] = 5 * torch.randn(3, 5, 32)
    with torch.no_grad():
        out = pool(tokens, 1, mask=mask)
        assert torch.allclose(pool(changed, 1, mask=mask), out, atol=1e-6)
        assert not torch.allclose(pool(changed, 1), pool(tokens, 1), atol=1e-3)
        torch.testing.assert_close(pool(tokens, 1, mask=torch.ones_like(mask)), pool(tokens, 1))
        # the prefix token is left out: changing it changes nothing
        prefix = tokens.clone()
        prefix[:, 0] = 9.0
        torch.testing.assert_close(pool(prefix, 1), pool(tokens, 1))
    with pytest.raises(ValueError, match="key-padding mask"):
        pool(tokens, 1, mask=mask[:, :5])


def test_map_pool_reuses_the_models_mlp_or_its_own() -> None:
    model = build(pool={"type": "map"}, mlp={"type": "mlp", "ratio": 2.0, "activation": "silu"})
    assert model.pool.mlp.fc1.out_features == 64 and isinstance(model.pool.mlp.act, torch.nn.SiLU)
    own = build(pool={"type": "map", "num_heads": 4, "mlp": {"type": "mlp", "ratio": 1.0}})
    assert own.pool.mlp.fc1.out_features == 32 and own.pool.num_heads == 4
    with pytest.raises(vitzoo.SpecError, match="num_heads"):
        build(pool={"type": "map", "num_heads": 5})


def test_map_pool_is_a_pooling_timm_users_can_switch_to() -> None:
    model = build()
    model.set_global_pool("map")
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5) and model.vitzoo_spec.model.pool.type == "map"


def test_projection_head_is_bias_free_and_resets_like_any_head() -> None:
    model = build(head={"type": "projection"}, num_classes=12)
    assert model.head.fc.bias is None and model(torch.randn(1, 3, 32, 32)).shape == (1, 12)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 32)
    model.reset_classifier(4)
    assert model.head.fc.weight.shape == (4, 32) and model.head.fc.bias is None


def test_crop_remainder_reads_what_whole_patches_cover() -> None:
    """A 30 px image with 8 px patches: a 3 x 3 grid of the top-left 24 px, as a strided
    convolution computes; without the option the size is refused."""
    model = build(image_size=30, patch={"type": "linear", "patch_size": 8, "crop_remainder": True})
    x = torch.randn(1, 3, 30, 30)
    with torch.no_grad():
        assert torch.equal(model.patch(x)[0], model.patch(x[..., :24, :24])[0])
    with pytest.raises(vitzoo.SpecError, match="does not divide"):
        build(image_size=30)


def test_cait_with_a_map_head_example_builds_and_trains(tmp_path: Path) -> None:
    """examples/cait-map-head.yaml: CaiT's talking heads and class attention, SigLIP's MAP
    head (reading the class token too), CLIP's norm_pre and quick-GELU. Full size builds
    (12.4M); at a tiny size every parameter (class stage and probe included) gets a gradient,
    and the trainer runs an epoch of it."""
    from vitzoo.training.trainer import train

    example = EXAMPLES / "cait-map-head.yaml"
    full = vitzoo.build(example)
    assert sum(p.numel() for p in full.parameters()) == 12_401_320
    assert type(full).__name__ == "Cait" and isinstance(full.pool, MapPool)
    tiny = {"image_size": 16, "dim": 32, "depth": 1, "cls_depth": 1, "num_heads": 2}
    overrides = {f"model.{k}": v for k, v in tiny.items()}
    overrides |= {"model.patch.patch_size": 8, "model.num_classes": 2}

    model = jitter(vitzoo.build(example, **overrides)).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.arange(4) % 2)
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert silent == []

    data = make_dataset(tmp_path / "data", odd_formats=False)
    result = train(example, data, epochs=1, batch_size=8, out=tmp_path / "run", overrides=overrides)
    assert torch.isfinite(torch.tensor(result.final["train_loss"]))
    assert isinstance(result.model.pool, MapPool) and result.model.config.norm_pre
