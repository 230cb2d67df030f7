"""Fixture: timm's CaiT (talking heads, LayerScale, class attention) at a tiny width."""

from reference_fixtures import Fixture

TINY = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 4,
    "depth_token_only": 2,
    "num_classes": 5,
}


def _cait():
    import timm

    return timm.create_model("cait_xxs24_224", pretrained=False, **TINY)


#: Noise scale: at these widths the driver's default (0.05) leaves attention near uniform, so a
#: wrong q/k or talking-heads map would still agree; 0.3 makes every tensor move the output.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="timm-cait",
        build=_cait,
        input_shape=(2, 3, 32, 32),
        constructor="timm.create_model('cait_xxs24_224', "
        + ", ".join(f"{k}={v!r}" for k, v in TINY.items())
        + ")",
        meta={"timm_name": "cait_xxs24_224", **TINY},
        noise=NOISE,
    ),
]
