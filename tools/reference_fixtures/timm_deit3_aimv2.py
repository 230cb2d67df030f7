"""Fixtures: timm's DeiT III and AIMv2, and the official DeiT III and AIMv2 models, tiny.

timm's are run at their own size and at a second one, both ways timm offers
(``dynamic_img_size=True`` and ``set_input_size`` on a copy; bicubic, antialiased
``resample_abs_pos_embed``). The official DeiT III code (facebookresearch/deit
``models_v2.py``, not on PyPI; it imports timm, so it runs in the reference env) has no
resampling: it is run at its own size. Check the repository out and point ``DEIT_REPO`` at it
(made with commit 7e160fe of facebookresearch/deit)::

    git clone https://github.com/facebookresearch/deit /tmp/deit
    DEIT_REPO=/tmp/deit /work/refenv/bin/python tools/make_reference_fixtures.py official-deit3

The official AIMv2 encoder (apple/ml-aim, ``aim-v2/aim/v2/torch/models.py``; it needs the
sibling ``aim-v1`` package) likewise, from ``ML_AIM_REPO`` (made with commit bd9e068)::

    git clone https://github.com/apple/ml-aim /tmp/ml-aim
    ML_AIM_REPO=/tmp/ml-aim /work/refenv/bin/python tools/make_reference_fixtures.py official-aimv2

Its output is the encoder's (the tokens after ``post_trunk_norm``; no head).
"""

import os
import sys
from functools import partial

from reference_fixtures import Fixture
from reference_fixtures._resized import with_second_size

DEIT3 = {
    "img_size": 24,
    "patch_size": 4,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 5,
}
#: AIMv2's SwiGLU hidden width: 16 * 2.75 = 44.
AIMV2 = {
    "img_size": 24,
    "patch_size": 4,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 5,
}
NOISE = 0.3


def _set_input_size(model, size):
    model.set_input_size(img_size=size)
    return model


def _timm(name: str, kwargs: dict, size: tuple[int, int]):
    import timm

    model = timm.create_model(name, pretrained=False, dynamic_img_size=True, **kwargs)
    return with_second_size(model, size, _set_input_size)


def _timm_fixture(fixture: str, name: str, kwargs: dict, shape, size) -> Fixture:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return Fixture(
        name=fixture,
        build=lambda: _timm(name, kwargs, size),
        input_shape=shape,
        constructor=f"timm.create_model({name!r}, {args}, dynamic_img_size=True); outputs: at "
        f"{shape[-1]} px, at {size} (dynamic), at {size} after set_input_size",
        meta={"timm_name": name, **kwargs, "second_size": list(size)},
        noise=NOISE,
    )


def _official_deit3():
    repo = os.environ.get("DEIT_REPO")
    if not repo:
        raise SystemExit("set DEIT_REPO to a checkout of facebookresearch/deit (see docstring)")
    sys.path.insert(0, repo)
    from models_v2 import Layer_scale_init_Block, vit_models
    from torch import nn

    return vit_models(
        **DEIT3,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        block_layers=Layer_scale_init_Block,
    )


def _official_aimv2():
    repo = os.environ.get("ML_AIM_REPO")
    if not repo:
        raise SystemExit("set ML_AIM_REPO to a checkout of apple/ml-aim (see docstring)")
    sys.path[:0] = [os.path.join(repo, "aim-v1"), os.path.join(repo, "aim-v2")]
    from aim.v2.torch.models import AIMv2VisionEncoder

    return AIMv2VisionEncoder(**OFFICIAL_AIMV2)


#: AIMv2VisionEncoder kwargs (aimv2_large's, at the tiny size of the timm fixture).
OFFICIAL_AIMV2 = {
    "img_size": 24,
    "patch_size": 4,
    "embed_dim": 16,
    "mlp_hidden_dim": 44,
    "num_blocks": 2,
    "num_heads": 2,
}

FIXTURES = [
    _timm_fixture("timm-deit3", "deit3_small_patch16_224", DEIT3, (2, 3, 24, 24), (16, 12)),
    _timm_fixture("timm-aimv2", "aimv2_large_patch14_224", AIMV2, (2, 3, 24, 24), (16, 20)),
    Fixture(
        name="official-deit3",
        build=_official_deit3,
        input_shape=(2, 3, 24, 24),
        library="models_v2",
        constructor="models_v2.vit_models("
        + ", ".join(f"{k}={v!r}" for k, v in DEIT3.items())
        + ", mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), "
        "block_layers=Layer_scale_init_Block) (as deit_small_patch16_LS builds it)",
        meta={"official": "facebookresearch/deit@7e160fe models_v2.py", **DEIT3},
        noise=NOISE,
    ),
    Fixture(
        name="official-aimv2",
        build=_official_aimv2,
        input_shape=(2, 3, 24, 24),
        library="aim",
        constructor="aim.v2.torch.models.AIMv2VisionEncoder("
        + ", ".join(f"{k}={v!r}" for k, v in OFFICIAL_AIMV2.items())
        + ") (apple/ml-aim layout: preprocessor.*, trunk.*)",
        meta={"official": "apple/ml-aim@bd9e068", **OFFICIAL_AIMV2},
        noise=NOISE,
    ),
]
