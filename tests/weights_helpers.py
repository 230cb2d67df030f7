"""Shared helpers for the pretrained-weights tests: perturbing every tensor, tiny HF models."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def perturb_every_tensor(model: nn.Module, seed: int = 1, weight_scale: float = 1.5) -> None:
    """Move every float parameter and buffer off its init, so zero biases, unit norms and
    identical BatchNorm statistics cannot hide a structural difference.

    Weights of rank >= 2 get noise of size weight_scale/sqrt(fan-in) (1.5: the signal survives
    deep conv stacks such as MobileViT's, so logits depend on the input; BatchNorm-after-every-
    linear LeViT takes 1.0, or its logits reach 1e4 and the float32 comparison, relative to the
    output's scale, loosens to 0.1),
    norm scales 1 +- 0.2, BatchNorm variances U(0.5, 1.5), everything else +- 0.1.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            elif tensor.ndim == 1 and name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * noise)
            elif tensor.ndim >= 2:
                tensor.add_(weight_scale * noise / tensor[0].numel() ** 0.5)
            else:
                tensor.add_(0.1 * noise)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def save_tiny_hf_vit(
    folder: Path, labels: tuple[str, ...] = ("stripes", "dots"), perturb: bool = False
) -> Path:
    """A tiny Hugging Face ViTForImageClassification (eps 1e-12 as transformers' ViT; its
    ``labels`` in id2label; every tensor moved off its init with ``perturb``) saved to
    ``folder``; skips the test without transformers."""
    import pytest

    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=48,
        image_size=16,
        patch_size=8,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model = transformers.ViTForImageClassification(config)
    if perturb:
        perturb_every_tensor(model)
    model.save_pretrained(folder)
    return folder
