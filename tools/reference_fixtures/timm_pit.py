"""Fixtures: timm's PiT and distilled PiT at a tiny width (two stages, one pooling)."""

from reference_fixtures import Fixture
from reference_fixtures._two_heads import with_both_heads

TINY = {
    "img_size": 32,
    "patch_size": 8,
    "stride": 4,
    "base_dims": [8, 8],
    "depth": [2, 1],
    "heads": [2, 4],
    "num_classes": 5,
}


def _create(name: str):
    import timm

    return timm.create_model(name, pretrained=False, **TINY)


def _call(name: str) -> str:
    return f"timm.create_model({name!r}, " + ", ".join(f"{k}={v!r}" for k, v in TINY.items()) + ")"


#: Noise scale: at these widths the driver's default (0.05) leaves attention near uniform, so a
#: wrong q/k map would still agree; 0.3 makes every tensor move the output measurably.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="timm-pit",
        build=lambda: _create("pit_ti_224"),
        input_shape=(2, 3, 32, 32),
        constructor=_call("pit_ti_224"),
        meta={"timm_name": "pit_ti_224", **TINY},
        noise=NOISE,
    ),
    Fixture(
        name="timm-pit-distilled",
        build=lambda: with_both_heads(_create("pit_ti_distilled_224")),
        input_shape=(2, 3, 32, 32),
        constructor=_call("pit_ti_distilled_224")
        + "; outputs: head(cls), head_dist(dist), eval mean",
        meta={"timm_name": "pit_ti_distilled_224", **TINY, "outputs": ["cls", "dist", "eval"]},
        noise=NOISE,
    ),
]
