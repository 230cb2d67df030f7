"""SigLIP 2 NaFlex image towers: SigLIP at each image's own aspect ratio and resolution.

Tschannen et al., "SigLIP 2: Multilingual Vision-Language Encoders with Improved Semantic
Understanding, Localization, and Dense Features" (arXiv:2502.14786), Sec. 2.4 (NaFlex); reference
code: timm's ``naflexvit_*_siglip`` (``NaFlexVit``) and Hugging Face's ``Siglip2VisionModel``.
Registered by the clip plugin (it owns SigLIP), with the core's packed ViT
(:class:`~vitzoo.components.native_vit.NativeVisionTransformer`): ``model([img_a, img_b])``
takes images of any size, a multiple of 16 on each side, and packs them.

What NaFlex changes against SigLIP, each a registered part: the patch embedding is a ``Linear``
over pre-patchified pixels in (row, column, channel) order (``flat-linear``, ``order: hwc``), and
the learned 16 x 16 position table is resized to each image's own patch grid, bilinearly with
antialiasing (``learned`` with ``include_prefix: false``, ``interpolation: bilinear``,
``antialias: true``); the ``map`` attention-pool head reads each image's tokens only (its
key-padding mask). Everything else is SigLIP's (no class token, tanh-GELU, LayerNorm eps 1e-6).
The spec's ``image_size`` (256 = 16 x 16 patches) sizes the table, not the images.
"""

from __future__ import annotations

from typing import Any, Literal

from vitzoo import ComponentSpec, component_default
from vitzoo.components.native_vit import NativeVitConfig
from vitzoo.config import NonNegativeInt, SizeOrPair
from vitzoo.registration_examples import TINY_VIT


class Siglip2NaflexConfig(NativeVitConfig):
    """SigLIP 2 NaFlex image tower: SigLIP on images of any size (packed), flat-linear patches,
    a position table resized per image; no classifier (the MAP output is the embedding)."""

    type: Literal["siglip2-naflex"] = "siglip2-naflex"
    image_size: SizeOrPair = 256
    num_classes: NonNegativeInt = 0
    class_token: bool = False
    patch: ComponentSpec("patchifier") = component_default(
        type="flat-linear", patch_size=16, order="hwc"
    )
    posenc: ComponentSpec("posenc") = component_default(
        type="learned", include_prefix=False, interpolation="bilinear", antialias=True
    )
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0, activation="gelu-tanh")
    pool: ComponentSpec("pooling") = component_default(type="map")


#: The conformance suite's tiny NaFlex tower: a 4 x 4 table of 8-px patches, width 32.
TINY_NAFLEX: dict[str, Any] = {
    **TINY_VIT,
    "patch": {"type": "flat-linear", "patch_size": 8, "order": "hwc"},
}


def register_naflex(register: Any) -> None:
    """The ``siglip2-naflex`` architecture (called from the clip plugin's hook)."""
    from vitzoo.components.native_vit import NativeVisionTransformer

    register(
        "siglip2-naflex",
        NativeVisionTransformer,
        Siglip2NaflexConfig,
        tags={"image", "tokens", "mask"},
        # the packed path masks attention across images; a packed row is no 2-D grid
        needs={"token-mask"},
        offers={"image", "tokens", "packed-images"},
        summary="SigLIP 2 NaFlex image tower: images of any size and aspect ratio, packed",
        example=TINY_NAFLEX,
    )
