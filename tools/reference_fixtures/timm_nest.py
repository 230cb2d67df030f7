"""Fixture: timm's NesT at a tiny width: two levels (4 blocks of 8x8 tokens, then 1).

``pad_type="same"`` is what timm's ``nest_*_jx`` (the authors' released JAX weights) use: the
aggregation max-pool pads like TensorFlow "SAME", asymmetrically on these even maps.
"""

from reference_fixtures import Fixture

TINY = {
    "img_size": 32,
    "patch_size": 2,
    "num_levels": 2,
    "embed_dims": [16, 24],
    "num_heads": [2, 2],
    "depths": [2, 1],
    "num_classes": 5,
    "pad_type": "same",
}


def _nest():
    # nest_tiny() fixes its widths (it cannot take embed_dims), so call its class directly.
    from timm.models.nest import Nest

    return Nest(**TINY)


#: Noise scale: at these widths the driver's default (0.05) leaves attention near uniform, so a
#: wrong q/k map would still agree; 0.3 makes every tensor move the output measurably.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="timm-nest",
        build=_nest,
        input_shape=(2, 3, 32, 32),
        constructor="timm.models.nest.Nest("
        + ", ".join(f"{k}={v!r}" for k, v in TINY.items())
        + ")",
        meta={"timm_name": "nest_tiny_jx", **TINY},
        noise=NOISE,
    ),
]
