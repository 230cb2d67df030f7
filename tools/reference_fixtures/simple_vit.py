"""Fixtures: SimpleViT's fixed sin-cos position tables from vit-pytorch (the big_vision formula).

vit-pytorch's ``SimpleViT`` adds patch LayerNorms and bias-free attention projections that
big_vision's ViT (the paper's code) does not have, so its weights do not map onto vitzoo's
``simple-vit``; what the two share, and what vitzoo must reproduce exactly, is the position
table. Each fixture wraps the reference function in a module that adds the table to its input.
"""

from torch import nn

from reference_fixtures import Fixture


class _AddTable2d(nn.Module):
    """tokens (B, h*w, D) + vit_pytorch.simple_vit.posemb_sincos_2d(h, w, D)."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w

    def forward(self, tokens):
        from vit_pytorch.simple_vit import posemb_sincos_2d

        return tokens + posemb_sincos_2d(self.h, self.w, tokens.shape[-1])


class _AddTable3d(nn.Module):
    """tokens (B, f*h*w, D) + vit_pytorch.simple_vit_3d.posemb_sincos_3d on an (f, h, w) grid."""

    def __init__(self, f: int, h: int, w: int) -> None:
        super().__init__()
        self.grid = (f, h, w)

    def forward(self, tokens):
        from vit_pytorch.simple_vit_3d import posemb_sincos_3d

        b, _, d = tokens.shape
        return tokens + posemb_sincos_3d(tokens.reshape(b, *self.grid, d))


FIXTURES = [
    Fixture(
        name="vit-pytorch-simple-vit-posemb-2d",
        build=lambda: _AddTable2d(3, 5),
        input_shape=(1, 15, 32),
        library="vit_pytorch",
        constructor="vit_pytorch.simple_vit.posemb_sincos_2d(h=3, w=5, dim=32)",
        meta={"grid": [3, 5], "dim": 32},
    ),
    Fixture(
        name="vit-pytorch-simple-vit-posemb-3d",
        build=lambda: _AddTable3d(2, 3, 4),
        input_shape=(1, 24, 48),
        library="vit_pytorch",
        constructor="vit_pytorch.simple_vit_3d.posemb_sincos_3d on a (2, 3, 4) grid, dim=48",
        meta={"grid": [2, 3, 4], "dim": 48},
    ),
]
