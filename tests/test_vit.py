"""The ViT base and its default components: behaviour the paper configs rely on."""

from __future__ import annotations

import torch

import vitzoo
from vitzoo.introspection import attention_maps

TINY = {
    "image_size": 32,
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 5,
    "model.patch.patch_size": 8,
}


def test_deit_distillation_head_pair_in_training_mean_in_eval() -> None:
    model = vitzoo.build("deit-ti-distilled", **TINY)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    cls_logits, dist_logits = model(x)
    assert cls_logits.shape == dist_logits.shape == (2, 5)
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.pool(features, model.num_prefix_tokens)
        expected = (model.head.fc(pooled[:, 0]) + model.head.fc_dist(pooled[:, 1])) / 2
        torch.testing.assert_close(model(x), expected)
    assert model.num_prefix_tokens == 2


def test_learned_positions_follow_a_new_image_size() -> None:
    model = vitzoo.build("vit-ti16", **TINY).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 48)).shape == (1, 5)  # 6x6 grid from a 4x4 table


def test_checkpoint_at_other_resolution_loads_with_resampled_positions() -> None:
    small = vitzoo.build("vit-ti16", **TINY)
    bigger = vitzoo.build("vit-ti16", **{**TINY, "image_size": 64})
    bigger.load_state_dict(small.state_dict())
    assert bigger.posenc.pos_embed.shape[1] == 1 + 64


def test_simple_vit_has_no_class_token_and_mean_pools() -> None:
    model = vitzoo.build("simple-vit-s16", **TINY)
    assert model.cls_token is None and model.num_prefix_tokens == 0
    assert not any("pos_embed" in n for n, _ in model.named_parameters())


def test_register_tokens_are_prefix_tokens() -> None:
    model = vitzoo.build("vit-ti16", register_tokens=3, **TINY).eval()
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 1 + 3 + 16, 32) and model.num_prefix_tokens == 4


def test_reset_classifier_and_pre_logits() -> None:
    model = vitzoo.build("vit-ti16", **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 32)
    model.reset_classifier(0)
    assert model(x).shape == (2, 32)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)


def test_attention_maps_every_layer_without_changing_output() -> None:
    model = vitzoo.build("vit-ti16", **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        maps = attention_maps(model, x)
        again = model(x)
    assert list(maps) == ["blocks.0.attn", "blocks.1.attn"]
    assert maps["blocks.0.attn"].shape == (2, 2, 17, 17)
    torch.testing.assert_close(maps["blocks.1.attn"].sum(-1), torch.ones(2, 2, 17))
    torch.testing.assert_close(reference, again)


def test_explicit_and_fused_attention_agree() -> None:
    model = vitzoo.build("vit-ti16", **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
        for block in model.blocks:
            block.attn.store_attention = True
        explicit = model(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)


def test_intermediates_and_grad_checkpointing() -> None:
    model = vitzoo.build("vit-ti16", **TINY)
    final, layers = model.forward_intermediates(torch.randn(2, 3, 32, 32))
    # final: the normed token sequence; layers: (B, C, H, W) maps of the patch tokens
    assert len(layers) == 2 and final.shape == (2, 17, 32)
    assert layers[-1].shape == (2, 32, 4, 4)
    model.set_grad_checkpointing(True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.patch.proj.weight.grad is not None


def test_no_weight_decay_names_positions_and_tokens() -> None:
    model = vitzoo.build("deit-ti-distilled", **TINY)
    assert model.no_weight_decay() == {"cls_token", "dist_token", "posenc.pos_embed"}
