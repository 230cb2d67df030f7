"""Built-in plugin: DeiT III (Touvron, Cord & Jégou, "DeiT III: Revenge of the ViT", ECCV 2022,
arXiv:2204.07118; reference code facebookresearch/deit ``models_v2.py``, ported by timm as
``deit3_*``).

DeiT III is the ViT base with other defaults, so this module only declares a config subclass:
LayerScale on both branches (``block: {type: pre-norm, layer_scale: 1e-6}``, timm's init;
the official code's is 1e-4 or 1e-5 by size -- an initial value, not the function) and a
position table over the patches only, the class token joining after it
(``posenc: {type: learned, include_prefix: false}``, timm's ``no_embed_class``). The table is
resampled at other sizes as timm resamples it (bicubic, antialiased); the official code has no
resampling.
"""

from __future__ import annotations

from typing import Any, Literal

from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.deit3_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.registration_examples import TINY_VIT


class Deit3Config(VitConfig):
    """DeiT III: a ViT with LayerScale whose learned positions leave out the class token."""

    type: Literal["deit3"] = "deit3"
    posenc: ComponentSpec("posenc") = component_default(
        type="learned", include_prefix=False, antialias=True
    )
    block: ComponentSpec("block") = component_default(type="pre-norm", layer_scale=1e-6)


@hookimpl
def register_architectures(register: Any) -> None:
    register("deit3", VisionTransformer, Deit3Config, tags={"image", "tokens"}, example=TINY_VIT)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "deit3")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
