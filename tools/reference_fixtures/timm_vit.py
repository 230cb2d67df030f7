"""Fixtures: timm's ViT, DeiT and distilled DeiT at a tiny width."""

from reference_fixtures import Fixture
from reference_fixtures._two_heads import with_both_heads

#: One tiny size for all three (timm kwargs; the test derives the vitzoo spec from them).
TINY = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 5,
}


def _create(name: str, **extra):
    import timm

    return timm.create_model(name, pretrained=False, **TINY, **extra)


def _call(name: str) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in TINY.items())
    return f"timm.create_model({name!r}, {args})"


#: Noise scale: at these widths the driver's default (0.05) leaves attention near uniform, so a
#: wrong q/k map would still agree; 0.3 makes every tensor move the output measurably.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="timm-vit",
        build=lambda: _create("vit_tiny_patch16_224"),
        input_shape=(2, 3, 32, 32),
        constructor=_call("vit_tiny_patch16_224"),
        meta={"timm_name": "vit_tiny_patch16_224", **TINY},
        noise=NOISE,
    ),
    Fixture(
        name="timm-deit",
        build=lambda: _create("deit_tiny_patch16_224"),
        input_shape=(2, 3, 32, 32),
        constructor=_call("deit_tiny_patch16_224"),
        meta={"timm_name": "deit_tiny_patch16_224", **TINY},
        noise=NOISE,
    ),
    Fixture(
        name="timm-deit-distilled",
        build=lambda: with_both_heads(_create("deit_tiny_distilled_patch16_224")),
        input_shape=(2, 3, 32, 32),
        constructor=_call("deit_tiny_distilled_patch16_224")
        + "; outputs: head(cls), head_dist(dist), eval mean",
        meta={
            "timm_name": "deit_tiny_distilled_patch16_224",
            **TINY,
            "outputs": ["cls", "dist", "eval"],
        },
        noise=NOISE,
    ),
]
