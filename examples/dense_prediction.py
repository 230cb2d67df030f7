"""A vitzoo backbone under a tiny dense-prediction head: per-pixel classes on generated shapes.

    python examples/dense_prediction.py --arch twins-svt --steps 200
    python examples/dense_prediction.py --arch vit --steps 200

The data is made on the fly: each image holds a few filled squares and discs on noise, and the
target gives every pixel its class (0 background, 1 square, 2 disc). The backbone is
``vitzoo.build(..., features_only=True, out_indices=...)``: a list of (B, C, H, W) maps whose
widths and strides ``feature_info`` declares, so the head is sized from it without knowing the
architecture -- a 1x1 projection per map, upsampled to the input and summed (a minimal FPN-free
decoder), then a per-pixel classifier. Any registered architecture works: a ViT's patch tokens
arrive as a map with its class token removed, a hierarchical model's stage maps as they are.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import vitzoo

NUM_CLASSES = 3  # background, square, disc

#: CPU-tiny backbones (32 px); any architecture spec works in their place.
BACKBONES: dict[str, dict[str, Any]] = {
    "vit": {
        "type": "vit",
        "image_size": 32,
        "dim": 32,
        "depth": 2,
        "num_heads": 2,
        "patch": {"type": "linear", "patch_size": 4},
    },
    "twins-svt": {
        "type": "twins-svt",
        "image_size": 32,
        "dims": [16, 32],
        "depths": [1, 1],
        "num_heads": [1, 2],
        "patch_sizes": [4, 2],
        "windows": [4, 2],
        "sr_ratios": [2, 1],
    },
}


def make_shapes(
    batch: int, size: int = 32, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (B, 3, S, S), labels (B, S, S) long): squares and discs in random colours."""
    g = generator or torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g) * 0.3
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for b in range(batch):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            kind = int(torch.randint(1, NUM_CLASSES, (1,), generator=g))
            radius = int(torch.randint(size // 8, size // 4, (1,), generator=g))
            cy, cx = (int(v) for v in torch.randint(radius, size - radius, (2,), generator=g))
            if kind == 1:
                inside = ((yy - cy).abs() <= radius) & ((xx - cx).abs() <= radius)
            else:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            colour = torch.rand(3, 1, generator=g) * 2 - 1
            images[b][:, inside] = colour
            labels[b][inside] = kind
    return images, labels


class DenseHead(nn.Module):
    """Project each feature map to ``width`` channels, upsample to the input, sum, classify."""

    def __init__(self, channels: Sequence[int], num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.classify = nn.Sequential(nn.GELU(), nn.Conv2d(width, num_classes, 1))

    def forward(self, maps: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        fused = sum(
            F.interpolate(lat(m), size=tuple(size), mode="bilinear", align_corners=False)
            for lat, m in zip(self.lateral, maps, strict=True)
        )
        return self.classify(fused)


class Segmenter(nn.Module):
    """A vitzoo ``features_only`` backbone + :class:`DenseHead`: (B, 3, H, W) -> (B, K, H, W)."""

    def __init__(self, backbone: nn.Module, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = DenseHead(backbone.feature_info.channels(), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x), x.shape[-2:])


def build_segmenter(arch: str = "twins-svt", out_indices: Any = None) -> Segmenter:
    backbone = vitzoo.build({"model": BACKBONES[arch]}, features_only=True, out_indices=out_indices)
    return Segmenter(backbone)


def train(
    model: nn.Module, steps: int = 30, batch: int = 8, lr: float = 3e-3, seed: int = 0
) -> list[float]:
    """AdamW on fresh generated batches; returns the loss of every step."""
    g = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        images, labels = make_shapes(batch, generator=g)
        loss = F.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def pixel_accuracy(model: nn.Module, batch: int = 32, seed: int = 123) -> float:
    images, labels = make_shapes(batch, generator=torch.Generator().manual_seed(seed))
    model.eval()
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(BACKBONES), default="twins-svt")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_segmenter(args.arch)
    info = model.backbone.feature_info
    print(f"backbone {args.arch}: channels {info.channels()}, strides {info.reduction()}")
    losses = train(model, steps=args.steps)
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; pixel accuracy {pixel_accuracy(model):.3f}")


if __name__ == "__main__":
    main()
