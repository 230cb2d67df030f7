"""Fixtures for the architecture modes added with the new presets (issue 10): timm's Twins-PCPVT
at a tiny width, and CrossViT's three-conv ("dagger") patch embedding for both patch sizes."""

from reference_fixtures import Fixture

PCPVT = {
    "img_size": 32,
    "patch_size": 4,
    "embed_dims": (16, 32),
    "num_heads": (1, 2),
    "mlp_ratios": (2, 1),
    "depths": (2, 2),
    "sr_ratios": (2, 1),
    "num_classes": 5,
}


def _pcpvt_tiny():
    from timm.models.twins import Block, Twins

    return Twins(**PCPVT, wss=None, block_cls=Block)


def _multi_conv(patch_size: int, img_size: int, dim: int):
    def build():
        from timm.models.crossvit import PatchEmbed

        class ContiguousPatchEmbed(PatchEmbed):
            """timm's module, its (transposed) token output made contiguous for safetensors."""

            def forward(self, x):
                return super().forward(x).contiguous()

        return ContiguousPatchEmbed(
            img_size=img_size, patch_size=patch_size, embed_dim=dim, multi_conv=True
        )

    return build


FIXTURES = [
    Fixture(
        name="timm-twins-pcpvt",
        build=_pcpvt_tiny,
        input_shape=(2, 3, 32, 32),
        constructor=f"timm.models.twins.Twins(**{PCPVT}, wss=None, block_cls=Block)",
        meta={k: list(v) if isinstance(v, tuple) else v for k, v in PCPVT.items()},
        noise=0.3,
    ),
    *(
        Fixture(
            name=f"timm-crossvit-multi-conv-{p}",
            build=_multi_conv(p, size, dim),
            input_shape=(1, 3, size, size),
            constructor=f"timm.models.crossvit.PatchEmbed(img_size={size}, patch_size={p}, "
            f"embed_dim={dim}, multi_conv=True)",
            meta={"patch_size": p, "img_size": size, "embed_dim": dim},
            noise=0.3,
        )
        for p, size, dim in ((12, 48, 16), (16, 32, 32))
    ),
]

#: timm's CrossViT-dagger at a tiny width (three-conv patch embedding, 40-px large-branch view).
DAGGER = {
    "img_size": 48,
    "img_scale": (1.0, 32 / 48),
    "patch_size": [12, 16],
    "embed_dim": [16, 32],
    "depth": [[1, 1, 0]],
    "num_heads": [2, 2],
    "mlp_ratio": [2, 2, 1],
    "multi_conv": True,
    "num_classes": 5,
}


def _crossvit_dagger():
    import timm

    return timm.create_model("crossvit_9_dagger_240", pretrained=False, **DAGGER)


FIXTURES.append(
    Fixture(
        name="timm-crossvit-dagger",
        build=_crossvit_dagger,
        input_shape=(2, 3, 48, 48),
        constructor=f"timm.create_model('crossvit_9_dagger_240', **{DAGGER})",
        meta={"image_size": 48, "large_image_size": 32, "embed_dim": [16, 32], "num_classes": 5},
        noise=0.3,
    )
)
