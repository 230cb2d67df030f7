"""Fixture: vit-pytorch's patch embedding with Dual PatchNorm (LayerNorm before and after the
projection; the default of vit-pytorch's ``ViT`` and ``SimpleViT`` since 1.0).

The module is ``vit_pytorch.ViT(...).to_patch_embedding`` itself -- Rearrange to
``(p1 p2 c)``-ordered patches, LayerNorm(patch_dim), Linear, LayerNorm(dim) -- taken from a
real tiny ``ViT``, so the fixture holds exactly the reference's patch embedding (state-dict keys
``1.weight`` / ``2.weight`` ... of that Sequential). Made with vit-pytorch 1.26.14.
"""

from reference_fixtures import Fixture

VIT = {
    "image_size": 24,
    "patch_size": (4, 6),
    "num_classes": 5,
    "dim": 16,
    "depth": 1,
    "heads": 2,
    "mlp_dim": 32,
    "channels": 3,
}


def _patch_embedding():
    from vit_pytorch import ViT

    return ViT(**VIT).to_patch_embedding


FIXTURES = [
    Fixture(
        name="vit-pytorch-dual-patchnorm",
        build=_patch_embedding,
        input_shape=(2, 3, 24, 24),
        library="vit_pytorch",
        constructor="vit_pytorch.ViT("
        + ", ".join(f"{k}={v!r}" for k, v in VIT.items())
        + ").to_patch_embedding",
        meta=VIT | {"patch_size": list(VIT["patch_size"])},
        noise=0.3,
    ),
]
