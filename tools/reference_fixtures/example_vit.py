"""Fixture: timm's ViT at a tiny width (the pattern every family module follows)."""

from reference_fixtures import Fixture


def _vit_tiny():
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=5,
    )


FIXTURES = [
    Fixture(
        name="timm-vit",
        build=_vit_tiny,
        input_shape=(2, 3, 32, 32),
        constructor="timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)",
        meta={
            "timm_name": "vit_tiny_patch16_224",
            "img_size": 32,
            "patch_size": 8,
            "embed_dim": 32,
            "depth": 2,
            "num_heads": 2,
            "num_classes": 5,
        },
    ),
]
