"""Built-in plugin: ViT, SimpleViT and DeiT (with a distillation token) and their paper presets.

All three are the core ViT base with different default parts, so this module only declares
configs with other defaults; the maths lives in :mod:`vitzoo.components`.
"""

from __future__ import annotations

from typing import Any, Literal

from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.vit_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.registration_examples import TINY_VIT

TINY = TINY_VIT


class SimpleVitConfig(VitConfig):
    """SimpleViT (Beyer et al., 2022): fixed 2D sin-cos positions, no class token, mean pooling.

    The positions are the reference table (big_vision ``posemb_sincos_2d``, also vit-pytorch's
    ``SimpleViT``): [sin x, cos x, sin y, cos y] with frequencies ``1 / T ** (i / (d/4 - 1))``.
    """

    type: Literal["simple-vit"] = "simple-vit"
    posenc: ComponentSpec("posenc") = component_default(
        type="sincos", reverse_axes=True, endpoint=True
    )
    pool: ComponentSpec("pooling") = component_default(type="mean")
    class_token: bool = False


class DeitConfig(VitConfig):
    """DeiT (Touvron et al., 2021) with a distillation token and the two-output distillation head."""

    type: Literal["deit"] = "deit"
    distillation_token: bool = True
    pool: ComponentSpec("pooling") = component_default(type="cls-dist")
    head: ComponentSpec("head") = component_default(type="distillation")


@hookimpl
def register_architectures(register: Any) -> None:
    register("vit", VisionTransformer, VitConfig, tags={"image", "tokens"}, example=TINY)
    register(
        "simple-vit", VisionTransformer, SimpleVitConfig, tags={"image", "tokens"}, example=TINY
    )
    register(
        "deit",
        VisionTransformer,
        DeitConfig,
        tags={"image", "tokens", "distillation"},
        example=TINY,
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "vit")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
