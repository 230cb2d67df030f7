"""Fixtures: timm's Beit (BEiT / BEiT v2 fine-tuning layout) at a tiny width.

* ``timm-beit``: relative position bias per block over a non-square 3 x 4 patch grid plus the
  class-token entries, q/v biases, LayerScale, mean pooling with ``fc_norm``;
* ``timm-beit-resized``: the same model (same seed and noise, so the same weights before the
  move), moved to a 5 x 6 grid by timm's own ``set_input_size``: every block's table is
  resampled by ``resize_rel_pos_bias_table``. Its state dict holds the resampled tables, its
  output is the moved model's.
"""

from reference_fixtures import Fixture, perturb_

TINY = {
    "img_size": (24, 32),
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "num_classes": 5,
    "init_values": 0.1,
}
#: Noise scale: large enough that a wrong offset index or class-token entry moves the output far
#: beyond the tolerance (the driver's 0.05 leaves attention near uniform).
NOISE = 0.3
SEED = 0
RESIZED_TO = (40, 48)


def _beit():
    import timm

    return timm.create_model("beit_base_patch16_224", pretrained=False, **TINY)


def _beit_resized():
    """``timm-beit``'s weights (the driver seeds the constructor the same way before ``build``),
    perturbed here as the driver perturbs ``timm-beit``, then moved; the fixture adds no noise."""
    model = perturb_(_beit(), seed=SEED, noise=NOISE)
    model.set_input_size(img_size=RESIZED_TO)
    return model


_CONSTRUCTOR = "timm.create_model('beit_base_patch16_224', " + ", ".join(
    f"{k}={v!r}" for k, v in TINY.items()
)

FIXTURES = [
    Fixture(
        name="timm-beit",
        build=_beit,
        input_shape=(2, 3, 24, 32),
        constructor=_CONSTRUCTOR + ")",
        meta={"timm_name": "beit_base_patch16_224", **TINY},
        noise=NOISE,
        seed=SEED,
    ),
    Fixture(
        name="timm-beit-resized",
        build=_beit_resized,
        input_shape=(2, 3, *RESIZED_TO),
        constructor=_CONSTRUCTOR
        + f"), perturbed as timm-beit, .set_input_size(img_size={RESIZED_TO!r})",
        meta={"timm_name": "beit_base_patch16_224", **TINY, "resized_to": RESIZED_TO},
        noise=0.0,
        seed=SEED,
    ),
]
