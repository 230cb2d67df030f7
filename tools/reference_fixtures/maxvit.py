"""Fixture: timm's TensorFlow-compatible MaxViT (``maxvit_*_tf_*``: the port of the released
weights) at a tiny width, non-square input. The tiny config is maxvit_tiny_tf's with widths,
depths, head size and window/grid sizes shrunk."""

from dataclasses import replace

from reference_fixtures import Fixture

_SIZES = {
    "img_size": (32, 48),
    "embed_dim": (8, 16),
    "depths": (1, 1),
    "stem_width": 8,
    "head_hidden_size": 16,
    "dim_head": 8,
    "window_size": (2, 2),
    "num_classes": 5,
}


def _maxvit():
    from timm.models.maxxvit import MaxxVit, model_cfgs

    base = model_cfgs["maxvit_tiny_tf"]
    cfg = replace(
        base,
        embed_dim=_SIZES["embed_dim"],
        depths=_SIZES["depths"],
        block_type=("M",) * len(_SIZES["depths"]),
        stem_width=_SIZES["stem_width"],
        head_hidden_size=_SIZES["head_hidden_size"],
        transformer_cfg=replace(
            base.transformer_cfg,
            dim_head=_SIZES["dim_head"],
            window_size=_SIZES["window_size"],
            grid_size=_SIZES["window_size"],
        ),
    )
    return MaxxVit(cfg, img_size=_SIZES["img_size"], num_classes=_SIZES["num_classes"])


FIXTURES = [
    Fixture(
        name="timm-maxvit",
        build=_maxvit,
        input_shape=(2, 3, 32, 48),
        constructor=f"timm.models.maxxvit.MaxxVit(model_cfgs['maxvit_tiny_tf'] with {_SIZES})",
        meta={
            "timm_name": "maxvit_tiny_tf_224",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in _SIZES.items()},
        },
    ),
]
