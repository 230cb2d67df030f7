"""Built-in plugin: AIMv2 (Fini et al., "Multimodal Autoregressive Pre-training of Large Vision
Encoders", CVPR 2025, arXiv:2411.14402; reference code apple/ml-aim, ported by timm as
``aimv2_*`` and by transformers as ``Aimv2VisionModel``).

AIMv2's encoder is the ViT base with other parts, each a registered component or option:
RMSNorm right after the patch projection (``patch: {norm: rmsnorm}``), no class token (mean
pooling over the patch tokens, after the final norm, as timm's ``global_pool='avg'`` with
``fc_norm=False``), RMSNorm everywhere (eps 1e-5), no bias in q/k/v, the attention output or
the MLP, and a SwiGLU MLP (``mlp: {type: swiglu, bias: false}``; timm's ``fc1_g`` / ``fc1_x``
and HF's ``gate_proj`` / ``up_proj`` are its packed ``fc1``, gate first). The table covers the patches only and is resampled at other sizes as timm
does (bicubic, antialiased).
"""

from __future__ import annotations

from typing import Any, Literal

from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.aimv2_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.norms import NormKind
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import PositiveFloat
from vitzoo.registration_examples import TINY_VIT

#: RMSNorm's eps in every AIMv2 release (timm, transformers, apple/ml-aim).
EPS = 1e-5
#: The tiny conformance model keeps the patch RMSNorm (the example replaces the patchifier).
TINY = TINY_VIT | {"patch": {"type": "linear", "patch_size": 8, "norm": "rmsnorm", "norm_eps": EPS}}


class Aimv2Config(VitConfig):
    """AIMv2's vision encoder: RMSNorm (patches too), bias-free SwiGLU blocks, mean pooling."""

    type: Literal["aimv2"] = "aimv2"
    patch: ComponentSpec("patchifier") = component_default(
        type="linear", patch_size=14, norm="rmsnorm", norm_eps=EPS
    )
    posenc: ComponentSpec("posenc") = component_default(type="learned", antialias=True)
    attention: ComponentSpec("attention") = component_default(
        type="mhsa", qkv_bias=False, proj_bias=False
    )
    mlp: ComponentSpec("mlp") = component_default(type="swiglu", bias=False)
    block: ComponentSpec("block") = component_default(type="pre-norm", norm="rmsnorm", norm_eps=EPS)
    pool: ComponentSpec("pooling") = component_default(type="mean")
    class_token: bool = False
    norm: NormKind = "rmsnorm"
    norm_eps: PositiveFloat = EPS


@hookimpl
def register_architectures(register: Any) -> None:
    register("aimv2", VisionTransformer, Aimv2Config, tags={"image", "tokens"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "aimv2")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
