"""Built-in plugin: DINOv2 (Oquab et al., TMLR 2024, arXiv:2304.07193), with and without
registers (Darcet et al., "Vision Transformers Need Registers", ICLR 2024, arXiv:2309.16588).

DINOv2 is the ViT base with other defaults, so this module only declares a config subclass:

* patch 14 and a 518-px learned table (37 x 37), trained with the class token's position in it;
* LayerScale on both branches (``block: {type: pre-norm, layer_scale: ...}``);
* ViT-g uses a fused SwiGLU MLP (``mlp: {type: swiglu, hidden_dim: 4096}``: the official
  ``SwiGLUFFNFused`` / timm's ``SwiGLUPacked`` layout, one ``fc1`` of 2 x 4096 rows, the SiLU
  on the first half);
* with registers (``register_tokens: 4``) the table covers the patches only
  (``posenc: {include_prefix: false}``): timm folds the class token's position into the class
  token, which its converters from the official and Hugging Face layouts do too.

How the table is resampled at another input size is part of the released functions and differs
between them (:class:`vitzoo.components.posenc.TableResampling`): timm resamples bicubic with
antialias (the presets' default, since their aliases are timm's names); the official hub models
without registers use ``interpolate_offset: 0.1`` and no antialias, with registers antialias
and no offset; Hugging Face's ``Dinov2Model`` resamples to the size without antialias, its
``Dinov2WithRegistersModel`` with antialias. The Hugging Face converters set their model's
options from ``config.json``; loading an official hub checkpoint into a preset and running it
at another size, set ``posenc: {antialias: false, interpolate_offset: 0.1}`` (no registers) to
compute exactly what the hub model computes there.

The model card's linear-probe feature is ``pool: {type: cls-mean}`` (class token and mean of
the patch tokens, registers left out).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.dinov2_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import SizeOrPair
from vitzoo.registration_examples import TINY_VIT

#: The tiny conformance model, with registers so the register path is exercised too.
TINY = TINY_VIT | {"register_tokens": 2, "posenc": {"type": "learned", "include_prefix": False}}


class Dinov2Config(VitConfig):
    """DINOv2: a ViT with LayerScale, patch 14 and a 518-px table, resampled as timm does."""

    type: Literal["dinov2"] = "dinov2"
    image_size: SizeOrPair = 518
    patch: ComponentSpec("patchifier") = component_default(type="linear", patch_size=14)
    posenc: ComponentSpec("posenc") = component_default(type="learned", antialias=True)
    block: ComponentSpec("block") = component_default(type="pre-norm", layer_scale=1e-5)
    #: ``vitzoo embed`` / ``vitzoo probe --features auto``: the model card's linear-probe input
    #: (class token and patch mean; the presets themselves pool the class token, as timm's do)
    probe_features: ClassVar[str] = "cls-mean"


@hookimpl
def register_architectures(register: Any) -> None:
    register("dinov2", VisionTransformer, Dinov2Config, tags={"image", "tokens"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "dinov2")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
