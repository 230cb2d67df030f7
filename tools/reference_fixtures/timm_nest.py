"""Fixture: timm's NesT at a tiny width: two levels (4 blocks of 8x8 tokens, then 1).

``pad_type="same"`` is what timm's ``nest_*_jx`` (the authors' released JAX weights) use: the
aggregation max-pool pads like TensorFlow "SAME", asymmetrically on these even maps. timm's
``nest_tiny`` / ``nest_small`` / ``nest_base`` pad the PyTorch way (``pad_type=""``): the same keys
and shapes, another function -- the second fixture, so the tests can show both, and that a load
says which one it assumed.
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


#: timm's PyTorch-padded NesT (nest_tiny and co.): everything else as above.
TINY_PYTORCH_PADDED = {**TINY, "pad_type": ""}


def _nest(**config):
    # nest_tiny() fixes its widths (it cannot take embed_dims), so call its class directly.
    from timm.models.nest import Nest

    return lambda: Nest(**config)


def _constructor(config: dict) -> str:
    return "timm.models.nest.Nest(" + ", ".join(f"{k}={v!r}" for k, v in config.items()) + ")"


#: Noise scale: at these widths the driver's default (0.05) leaves attention near uniform, so a
#: wrong q/k map would still agree; 0.3 makes every tensor move the output measurably.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="timm-nest",
        build=_nest(**TINY),
        input_shape=(2, 3, 32, 32),
        constructor=_constructor(TINY),
        meta={"timm_name": "nest_tiny_jx", **TINY},
        noise=NOISE,
    ),
    Fixture(
        name="timm-nest-pytorch-padded",
        build=_nest(**TINY_PYTORCH_PADDED),
        input_shape=(2, 3, 32, 32),
        constructor=_constructor(TINY_PYTORCH_PADDED),
        meta={"timm_name": "nest_tiny", **TINY_PYTORCH_PADDED},
        noise=NOISE,
    ),
]
