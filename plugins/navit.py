"""Built-in plugin: NaViT -- a ViT for images of any aspect ratio and resolution.

Dehghani et al., "Patch n' Pack: NaViT, a Vision Transformer for any Aspect Ratio and
Resolution" (NeurIPS 2023, arXiv:2307.06304); reference code: vit-pytorch's
``vit_pytorch.na_vit.NaViT`` (lucidrains), whose layout and function the presets follow.

NaViT is the core's packed ViT (:class:`~vitzoo.components.native_vit.NativeVisionTransformer`:
``model([img_a, img_b, ...])`` with images of any size, packed into shared sequences with a
block-diagonal mask, token dropout by ``patch_dropout`` / ``token_budget``) with NaViT's parts,
all registered components usable in any spec:

* patch embedding ``flat-linear`` (``chw`` pixel order): LayerNorm -> Linear -> LayerNorm, both
  norms without a shift (``layernorm-nobias``, vit-pytorch's LayerNorm keeps a zero buffer);
* ``factorized`` positions: a row table plus a column table, indexed by each patch's row and
  column (images up to ``image_size`` on each side);
* attention ``mhsa`` without biases, with per-head RMS qk-norm (``qk_norm_per_head``);
* blocks, final norm and the pooled vector's norm (``fc_norm``): bias-free LayerNorms, eps 1e-5;
* pooling ``query-attention``: a learned query attends to each image's tokens through the same
  attention, plus the query; head ``projection`` (a Linear without bias).

One function, two scalings: vit-pytorch computes attention logits with scale 1 on RMS-normalised
queries and keys (their RMS norm is ``F.normalize(x) * sqrt(d) * gamma``); vitzoo's mhsa keeps its
usual ``head_dim ** -0.5``. The two are the same function when each qk-norm scale is
``gamma * head_dim ** 0.25`` -- which is what the converter loads (:mod:`navit_weights`). A model
trained from scratch here therefore starts with logits ``sqrt(head_dim)`` times cooler than
vit-pytorch's at initialisation (unit qk-norm scales either way).
"""

from __future__ import annotations

from typing import Any, Literal

from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.navit_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.native_vit import NativeVisionTransformer, NativeVitConfig
from vitzoo.components.norms import NormKind
from vitzoo.config import PositiveFloat
from vitzoo.registration_examples import TINY_VIT

#: vit-pytorch's NaViT LayerNorm: no shift, eps 1e-5 (F.layer_norm's default).
_NORM = "layernorm-nobias"
_EPS = 1e-5


class NaVitConfig(NativeVitConfig):
    """NaViT (Dehghani et al., 2023): packed native-resolution ViT, vit-pytorch's parts."""

    type: Literal["navit"] = "navit"
    class_token: bool = False
    patch: ComponentSpec("patchifier") = component_default(
        type="flat-linear", patch_size=16, order="chw", pre_norm=_NORM, norm=_NORM, norm_eps=_EPS
    )
    posenc: ComponentSpec("posenc") = component_default(type="factorized")
    attention: ComponentSpec("attention") = component_default(
        type="mhsa",
        qkv_bias=False,
        proj_bias=False,
        qk_norm=True,
        qk_norm_type="rmsnorm",
        qk_norm_per_head=True,
        # vit-pytorch divides by max(||x||, 1e-12): an RMS norm with (almost) no eps
        qk_norm_eps=1e-12,
    )
    block: ComponentSpec("block") = component_default(type="pre-norm", norm=_NORM, norm_eps=_EPS)
    pool: ComponentSpec("pooling") = component_default(
        type="query-attention", norm=_NORM, norm_eps=_EPS
    )
    #: vit-pytorch's ``mlp_head``: a bias-free LayerNorm of the pooled vector, then a Linear
    #: without bias -- the ViT base's ``fc_norm`` (the ``norm`` kind) and the projection head.
    fc_norm: bool = True
    head: ComponentSpec("head") = component_default(type="projection")
    norm: NormKind = _NORM
    norm_eps: PositiveFloat = _EPS


#: The conformance suite's tiny NaViT: 32 px, patch 8, width 32, two blocks.
TINY_NAVIT: dict[str, Any] = {
    **TINY_VIT,
    "patch": {
        "type": "flat-linear",
        "patch_size": 8,
        "order": "chw",
        "pre_norm": _NORM,
        "norm": _NORM,
        "norm_eps": _EPS,
    },
}


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "navit",
        NativeVisionTransformer,
        NaVitConfig,
        tags={"image", "tokens", "mask"},
        # The packed path masks attention across images, so every attention and block must
        # take a mask; it does not offer a 2-D grid to its parts (a packed row is no grid);
        # it takes lists of images of different sizes (data.max_patches).
        needs={"token-mask"},
        offers={"image", "tokens", "packed-images"},
        summary="NaViT: images of any size and aspect ratio packed into shared sequences",
        example=TINY_NAVIT,
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "navit")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
