"""Built-in plugin: the image towers of CLIP (OpenAI, OpenCLIP) and SigLIP / SigLIP 2.

Both are the core ViT base with other default parts, so this module only declares configs with
other defaults; every mechanism is a registered component or a ViT option usable in any spec:

* **CLIP** (Radford et al., 2021, arXiv:2103.00020; OpenCLIP, Cherti et al., 2023): a norm after
  the patch embedding and positions (``norm_pre``, OpenAI's ``ln_pre``), LayerNorm eps 1e-5, a
  bias-free patch embedding, and the bias-free ``projection`` head whose output is the released
  image embedding. OpenAI's weights were trained with ``quick-gelu`` (the ``-quickgelu``
  presets); OpenCLIP's LAION / DataComp / DFN weights with exact GELU.
* **SigLIP** (Zhai et al., 2023, arXiv:2303.15343; SigLIP 2, Tschannen et al., 2025): no class
  token, the ``map`` attention-pool head (a learned probe attends to the tokens), GELU with the
  tanh approximation (big_vision's ``nn.gelu``); no classifier, so the model's output is the
  image embedding. SigLIP 2's fixed-resolution towers are the same model; its NaFlex towers
  (any aspect ratio and resolution, packed) are ``siglip2-naflex`` (:mod:`naflex`).

Presets (every published size) are in the catalogue, their timm model names as aliases, and
carry the weights' image statistics in ``data:`` (CLIP's and SigLIP's differ from ImageNet's);
converters for timm, OpenCLIP and Hugging Face checkpoints are in :mod:`clip_weights`.
"""

from __future__ import annotations

from typing import Any, Literal

from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.clip_weights import CONVERTERS
from vitzoo_plugins.naflex import register_naflex
from vitzoo_plugins.naflex_weights import CONVERTERS as NAFLEX_CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import NonNegativeInt, PositiveFloat
from vitzoo.registration_examples import TINY_VIT


class ClipConfig(VitConfig):
    """CLIP's image tower: ViT + ``norm_pre`` (ln_pre), LayerNorm eps 1e-5, bias-free patch
    embedding, bias-free projection head to the image embedding (512-d for ViT-B)."""

    type: Literal["clip"] = "clip"
    num_classes: NonNegativeInt = 512
    patch: ComponentSpec("patchifier") = component_default(type="linear", patch_size=16, bias=False)
    block: ComponentSpec("block") = component_default(type="pre-norm", norm_eps=1e-5)
    head: ComponentSpec("head") = component_default(type="projection")
    #: resampled at another size as timm does (bicubic, antialiased; the presets' aliases are
    #: timm's names); Hugging Face's converter sets its own way (no antialias)
    posenc: ComponentSpec("posenc") = component_default(type="learned", antialias=True)
    norm_pre: bool = True
    norm_eps: PositiveFloat = 1e-5


class SiglipConfig(VitConfig):
    """SigLIP's image tower: ViT without class token, MAP attention-pool head, tanh-GELU; no
    classifier (its pooled output is the image embedding)."""

    type: Literal["siglip"] = "siglip"
    num_classes: NonNegativeInt = 0
    class_token: bool = False
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0, activation="gelu-tanh")
    pool: ComponentSpec("pooling") = component_default(type="map")
    #: as CLIP's (timm's resampling; Hugging Face's converter sets no antialias)
    posenc: ComponentSpec("posenc") = component_default(type="learned", antialias=True)


@hookimpl
def register_architectures(register: Any) -> None:
    register("clip", VisionTransformer, ClipConfig, tags={"image", "tokens"}, example=TINY_VIT)
    register("siglip", VisionTransformer, SiglipConfig, tags={"image", "tokens"}, example=TINY_VIT)
    register_naflex(register)  # SigLIP 2 NaFlex: the packed ViT (issue 22)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "clip")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in (*CONVERTERS, *NAFLEX_CONVERTERS):
        register(converter)
