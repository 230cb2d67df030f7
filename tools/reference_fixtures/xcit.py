"""Fixtures: timm's XCiT (the official code's port) at a tiny width, tokens_norm on and off."""

from reference_fixtures import Fixture


def _xcit(tokens_norm: bool):
    def build():
        import timm

        return timm.create_model(
            "xcit_tiny_12_p8_224",
            pretrained=False,
            img_size=32,
            patch_size=8,
            embed_dim=16,
            depth=2,
            mlp_ratio=2.0,
            num_heads=4,
            cls_attn_layers=2,
            tokens_norm=tokens_norm,
            num_classes=5,
        )

    return build


def _fixture(name: str, tokens_norm: bool) -> Fixture:
    return Fixture(
        name=name,
        build=_xcit(tokens_norm),
        input_shape=(2, 3, 32, 48),
        # Larger noise than the default: at 0.05 the logits barely depend on the input.
        noise=0.2,
        constructor=(
            "timm.create_model('xcit_tiny_12_p8_224', img_size=32, patch_size=8, embed_dim=16, "
            f"depth=2, mlp_ratio=2.0, num_heads=4, cls_attn_layers=2, tokens_norm={tokens_norm}, num_classes=5)"
        ),
        meta={
            "timm_name": "xcit_tiny_12_p8_224",
            "patch_size": 8,
            "embed_dim": 16,
            "mlp_ratio": 2.0,
            "depth": 2,
            "num_heads": 4,
            "cls_attn_layers": 2,
            "tokens_norm": tokens_norm,
            "num_classes": 5,
            "image_size": [32, 48],
        },
    )


FIXTURES = [_fixture("timm-xcit", True), _fixture("timm-xcit-nano-style", False)]
