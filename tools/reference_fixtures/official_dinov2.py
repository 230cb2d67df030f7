"""Fixtures: the official DINOv2 model (facebookresearch/dinov2 ``DinoVisionTransformer``).

The official code is not on PyPI. Check it out and point ``DINOV2_REPO`` at it before writing
these fixtures (made with commit b8931f7 of facebookresearch/dinov2)::

    git clone https://github.com/facebookresearch/dinov2 /tmp/dinov2
    DINOV2_REPO=/tmp/dinov2 /work/refenv/bin/python tools/make_reference_fixtures.py \
        official-dinov2 official-dinov2-reg4-swiglu

Two tiny models, each as the hub builds its release (``_make_dinov2_model``):

* ``official-dinov2``: ``dinov2_vit{s,b,l}14``'s settings -- MLP, no registers, the table
  resampled with ``interpolate_offset=0.1`` and no antialias;
* ``official-dinov2-reg4-swiglu``: ``dinov2_vitg14_reg``'s -- the fused SwiGLU
  (``mlp.w12`` / ``mlp.w3``), 4 registers, antialias and no offset; built with
  ``block_chunks=2`` so the training checkpoints' nested ``blocks.<chunk>.<i>`` layout is read
  too (the hub passes ``block_chunks=0``).

A third, ``official-dinov2-reg4-lc1``, is the hub's 1-layer linear classifier
(``dinov2_vits14_reg_lc(layers=1)``: ``_LinearClassifierWrapper`` over the registers' backbone,
a Linear on [class token, mean of the patch tokens]) -- the model card's linear probe.

Each records, at 24 px and at 16 x 20 px (the table resampled by the model's own
``interpolate_pos_encoding``), the hub model's output (the normalised class token) and the
normalised patch tokens (registers excluded), so every token the model returns is compared.
"""

import os
import sys

from reference_fixtures import Fixture
from reference_fixtures._resized import with_second_size

COMMON = {
    "img_size": 24,
    "patch_size": 4,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
    "init_values": 1.0,
}
PLAIN = COMMON | {
    "block_chunks": 0,
    "num_register_tokens": 0,
    "ffn_layer": "mlp",
    "interpolate_antialias": False,
    "interpolate_offset": 0.1,
}
REG_SWIGLU = COMMON | {
    "block_chunks": 2,
    "num_register_tokens": 4,
    "ffn_layer": "swiglufused",
    "interpolate_antialias": True,
    "interpolate_offset": 0.0,
}
#: dinov2_vits14_reg's settings (MLP, registers, antialias) for the linear classifier.
REG_PLAIN = REG_SWIGLU | {"block_chunks": 0, "ffn_layer": "mlp"}
SECOND_SIZE = (16, 20)
NOISE = 0.3


def _cls_and_patches(model, x):
    features = model.forward_features(x)
    return model.head(features["x_norm_clstoken"]), features["x_norm_patchtokens"]


def _backbone(kwargs: dict):
    repo = os.environ.get("DINOV2_REPO")
    if not repo:
        raise SystemExit("set DINOV2_REPO to a checkout of facebookresearch/dinov2 (see docstring)")
    sys.path.insert(0, repo)
    from dinov2.models.vision_transformer import DinoVisionTransformer

    return DinoVisionTransformer(**kwargs)


def _official(kwargs: dict):
    return with_second_size(_backbone(kwargs), SECOND_SIZE, run=_cls_and_patches)


def _linear_classifier(kwargs: dict):
    """The hub's dinov2_vit*14_lc(layers=1) around a tiny backbone, with 5 classes."""
    from torch import nn

    backbone = _backbone(kwargs)
    from dinov2.hub.classifiers import _LinearClassifierWrapper

    head = nn.Linear(2 * kwargs["embed_dim"], 5)
    wrapper = _LinearClassifierWrapper(backbone=backbone, linear_head=head, layers=1)
    return with_second_size(wrapper, SECOND_SIZE)


def _fixture(name: str, kwargs: dict) -> Fixture:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return Fixture(
        name=name,
        build=lambda: _official(kwargs),
        input_shape=(2, 3, 24, 24),
        library="dinov2",
        constructor=f"dinov2.models.vision_transformer.DinoVisionTransformer({args}); outputs: "
        f"class token, patch tokens at 24 px, then at {SECOND_SIZE}",
        meta={
            "official": "facebookresearch/dinov2@b8931f7",
            **kwargs,
            "second_size": list(SECOND_SIZE),
        },
        noise=NOISE,
    )


FIXTURES = [
    _fixture("official-dinov2", PLAIN),
    _fixture("official-dinov2-reg4-swiglu", REG_SWIGLU),
    Fixture(
        name="official-dinov2-reg4-lc1",
        build=lambda: _linear_classifier(REG_PLAIN),
        input_shape=(2, 3, 24, 24),
        library="dinov2",
        constructor="dinov2.hub.classifiers._LinearClassifierWrapper(backbone="
        "DinoVisionTransformer("
        + ", ".join(f"{k}={v!r}" for k, v in REG_PLAIN.items())
        + f"), linear_head=nn.Linear(32, 5), layers=1); outputs: logits at 24 px, then at "
        f"{SECOND_SIZE}",
        meta={
            "official": "facebookresearch/dinov2@b8931f7",
            **REG_PLAIN,
            "num_classes": 5,
            "second_size": list(SECOND_SIZE),
        },
        noise=NOISE,
    ),
]
