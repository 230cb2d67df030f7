"""Fixture: vit-pytorch's ``NaViT`` on a batch of images of four different sizes.

``vit_pytorch.na_vit.NaViT`` takes a list of ``(C, H, W)`` images and packs them into one
sequence with a block-diagonal mask. A fixture's input is one tensor, so the fixture model is
NaViT with a forward that crops image ``i`` of the ``(4, C, 32, 32)`` input to ``SIZES[i]``
(top-left) and hands NaViT that list -- the model and its state dict are NaViT's own.

vit-pytorch's LayerNorm keeps its zero shift ``beta`` as a buffer (it never trains); the fixture
makes those buffers non-persistent so the perturbation, which moves every saved tensor, leaves
them at zero as every real NaViT has them (a perturbed beta is a function no NaViT computes).
"""

from reference_fixtures import Fixture

#: NaViT(...) keyword arguments: a tiny model, two heads of width 16.
NAVIT_TINY = {
    "image_size": 32,
    "patch_size": 4,
    "num_classes": 5,
    "dim": 32,
    "depth": 2,
    "heads": 2,
    "dim_head": 16,
    "mlp_dim": 64,
}
#: (H, W) of the four images cropped from the input: portrait, odd, square (the table's full
#: size), tiny landscape -- every one a multiple of the patch size.
SIZES = [(32, 16), (12, 20), (32, 32), (4, 8)]


def _navit():
    import torch
    from vit_pytorch.na_vit import LayerNorm, NaViT

    class NaViTOnCrops(NaViT):
        """NaViT whose input tensor carries the images: image i is ``x[i, :, :h_i, :w_i]``."""

        def forward(self, x):  # type: ignore[override]
            images = [x[i, :, :h, :w] for i, (h, w) in enumerate(SIZES)]
            return super().forward(images)

    model = NaViTOnCrops(**NAVIT_TINY)
    for module in model.modules():
        if isinstance(module, LayerNorm):
            beta = module.beta
            del module.beta
            module.register_buffer("beta", torch.zeros_like(beta), persistent=False)
    return model


#: At this width the default noise (0.05) leaves NaViT's qk-normalised attention close to what
#: unperturbed norms give; 0.3 moves every tensor's effect well above the tolerances.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="vit-pytorch-navit",
        build=_navit,
        input_shape=(len(SIZES), 3, 32, 32),
        library="vit_pytorch",
        constructor="vit_pytorch.na_vit.NaViT("
        + ", ".join(f"{k}={v!r}" for k, v in NAVIT_TINY.items())
        + f") on images of sizes {SIZES} (cropped from the input)",
        meta={"navit": NAVIT_TINY, "sizes": SIZES},
        noise=NOISE,
    ),
]
