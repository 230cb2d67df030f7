"""Fixtures: timm's DINOv2 (with and without registers, and ViT-g's packed SwiGLU), tiny.

Each is the timm constructor of a released model with a tiny width and a 6 x 6 patch table
(24 px, patch 4, where the release has 37 x 37 at 518 px), run at its own size and at 16 x 20
px (a 4 x 5 grid: a smaller, non-square table, as DINOv2 at 224 reads its 518 table). The
second size is run both ways timm offers: ``dynamic_img_size=True`` (the table resampled per
call) and ``set_input_size`` on a copy (resampled once); both use timm's
``resample_abs_pos_embed`` (bicubic, antialiased).
"""

from reference_fixtures import Fixture
from reference_fixtures._resized import with_second_size

#: timm kwargs shared by the DINOv2 fixtures (the test derives the vitzoo spec from them).
TINY = {
    "img_size": 24,
    "patch_size": 4,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 5,
}
SECOND_SIZE = (16, 20)
#: ViT-g's GluMlp needs an even hidden width: 24 * 2.66667 * 2 = 128 (two halves of 64).
GIANT = TINY | {"embed_dim": 24}
NOISE = 0.3


def _set_input_size(model, size):
    model.set_input_size(img_size=size)
    return model


def _dinov2(name: str, kwargs: dict, second: bool = True):
    import timm

    model = timm.create_model(name, pretrained=False, dynamic_img_size=second, **kwargs)
    return with_second_size(model, SECOND_SIZE, _set_input_size) if second else model


def _call(name: str, kwargs: dict, second: bool = True) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    if not second:
        return f"timm.create_model({name!r}, {args})"
    return (
        f"timm.create_model({name!r}, {args}, dynamic_img_size=True); outputs: at 24 px, "
        f"at {SECOND_SIZE} (dynamic), at {SECOND_SIZE} after set_input_size"
    )


def _fixture(fixture_name: str, timm_name: str, kwargs: dict, second: bool = True) -> Fixture:
    return Fixture(
        name=fixture_name,
        build=lambda: _dinov2(timm_name, kwargs, second),
        input_shape=(2, 3, 24, 24),
        constructor=_call(timm_name, kwargs, second),
        meta={"timm_name": timm_name, **kwargs, "second_size": list(SECOND_SIZE)},
        noise=NOISE,
    )


FIXTURES = [
    _fixture("timm-dinov2", "vit_small_patch14_dinov2", TINY),
    _fixture("timm-dinov2-reg4", "vit_small_patch14_reg4_dinov2", TINY),
    _fixture("timm-dinov2-giant-reg4", "vit_giant_patch14_reg4_dinov2", GIANT, second=False),
]
