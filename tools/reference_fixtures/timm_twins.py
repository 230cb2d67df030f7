"""Fixture: timm's Twins-SVT at a tiny width: both LSA window sizes and GSA with and without
sub-sampling appear (stage 0: window 4, reduction 2; stage 1: window 2, reduction 1).

40 px makes maps of 10x10 and 5x5 that the windows do not tile, so the fixture also proves the
zero-padded windows (the reference attends the padding; it does not mask it).
"""

from reference_fixtures import Fixture

TINY = {
    "img_size": 40,
    "patch_size": 4,
    "embed_dims": [16, 24],
    "num_heads": [2, 2],
    "mlp_ratios": [4, 4],
    "depths": [2, 2],
    "wss": [4, 2],
    "sr_ratios": [2, 1],
    "num_classes": 5,
}


def _twins():
    import timm

    return timm.create_model("twins_svt_small", pretrained=False, **TINY)


#: Noise scale: at these widths the driver's default (0.05) leaves attention near uniform, so a
#: wrong q/k map would still agree; 0.3 makes every tensor move the output measurably.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="timm-twins",
        build=_twins,
        input_shape=(2, 3, 40, 40),
        constructor="timm.create_model('twins_svt_small', "
        + ", ".join(f"{k}={v!r}" for k, v in TINY.items())
        + ")",
        meta={"timm_name": "twins_svt_small", **TINY},
        noise=NOISE,
    ),
]
