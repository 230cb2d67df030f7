"""Fixtures: timm's Eva as the EVA-02 models build it, at a tiny width.

* ``timm-eva02-fused``: ``eva02_tiny_patch14_224``'s layout (one qkv weight with q/v biases,
  packed SwiGLU ``fc1``) on a non-square grid whose RoPE coordinates are rescaled to a
  reference grid of another shape, so row / column order and the per-axis rescaling matter;
* ``timm-eva02-unfused``: ``eva02_base_patch14_224``'s (separate q/k/v projections, SwiGLU
  halves ``fc1_g`` / ``fc1_x`` with the sub-LN before ``fc2``);
* ``timm-eva02-rotate-half``: the same with ``rope_rotate_half=True`` (channel i pairs with
  i + d/2);
* ``timm-eva02-rope-resized``: no absolute positions (so no tensor depends on the grid), built
  at 32 x 24 px and moved to 48 x 40 px by timm's own ``set_input_size``: the RoPE coordinates
  follow the new grid, rescaled to the same reference grid.
"""

from reference_fixtures import Fixture

TINY = {
    "img_size": (24, 32),
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 1.5,
    "num_classes": 5,
    "ref_feat_shape": (4, 5),
}
#: Noise scale: large enough that swapped rows / columns of the rotation or q / k move the
#: output far beyond the tolerance (the driver's 0.05 leaves attention near uniform).
NOISE = 0.3
RESIZED_FROM = (32, 24)
RESIZED_TO = (48, 40)


def _eva(name: str, **overrides):
    import timm

    return timm.create_model(name, pretrained=False, **{**TINY, **overrides})


def _rope_resized():
    model = _eva("eva02_base_patch14_224", img_size=RESIZED_FROM, use_abs_pos_emb=False)
    model.set_input_size(img_size=RESIZED_TO)
    return model


def _constructor(name: str, **overrides) -> str:
    args = {**TINY, **overrides}
    return f"timm.create_model({name!r}, " + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


FIXTURES = [
    Fixture(
        name="timm-eva02-fused",
        build=lambda: _eva("eva02_tiny_patch14_224"),
        input_shape=(2, 3, 24, 32),
        constructor=_constructor("eva02_tiny_patch14_224"),
        meta={"timm_name": "eva02_tiny_patch14_224", **TINY},
        noise=NOISE,
    ),
    Fixture(
        name="timm-eva02-unfused",
        build=lambda: _eva("eva02_base_patch14_224"),
        input_shape=(2, 3, 24, 32),
        constructor=_constructor("eva02_base_patch14_224"),
        meta={"timm_name": "eva02_base_patch14_224", "mlp_norm": True, **TINY},
        noise=NOISE,
    ),
    Fixture(
        name="timm-eva02-rotate-half",
        build=lambda: _eva("eva02_tiny_patch14_224", rope_rotate_half=True),
        input_shape=(2, 3, 24, 32),
        constructor=_constructor("eva02_tiny_patch14_224", rope_rotate_half=True),
        meta={"timm_name": "eva02_tiny_patch14_224", "rope_rotate_half": True, **TINY},
        noise=NOISE,
    ),
    Fixture(
        name="timm-eva02-rope-resized",
        build=_rope_resized,
        input_shape=(2, 3, *RESIZED_TO),
        constructor=_constructor(
            "eva02_base_patch14_224", img_size=RESIZED_FROM, use_abs_pos_emb=False
        )
        + f".set_input_size(img_size={RESIZED_TO!r})",
        meta={
            "timm_name": "eva02_base_patch14_224",
            "mlp_norm": True,
            **TINY,
            "img_size": RESIZED_FROM,
            "resized_to": RESIZED_TO,
            "use_abs_pos_emb": False,
        },
        noise=NOISE,
    ),
]
