"""Built-in plugin: CaiT (Touvron et al., 2021, arXiv:2103.17239).

CaiT changes three things in a ViT, each a separate component so that any spec can take one
without the others:

* **LayerScale** -- already a block option (``block: {type: pre-norm, layer_scale: 1e-5}``);
* **talking-heads attention** (attention ``talking-heads``, registered here): learned head mixing
  of the logits before the softmax and of the weights after it;
* **class attention** (block ``class-attention``, registered by the core because XCiT uses it
  too): the class token enters late and, in the last ``cls_depth`` blocks, only it is updated by
  attending to [cls, patches]; patch tokens pass through untouched.

The ``cait`` architecture is the shared late-class-token model
(:mod:`vitzoo.components.late_class_token`) with these defaults: the self-attention stage runs on
patch tokens only (learned positions for patches only), then the class token is prepended for
the class-attention stage.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.cait_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.head_mixing import HeadMix
from vitzoo.components.late_class_token import LateClassTokenConfig, LateClassTokenTransformer
from vitzoo.registration_examples import TINY_VIT

TINY = TINY_VIT | {"cls_depth": 1}


# -- talking-heads attention --------------------------------------------------------------------
class TalkingHeadsConfig(MhsaConfig):
    """Talking-heads attention (Shazeer et al., 2020): heads mix before and after the softmax."""

    type: Literal["talking-heads"] = "talking-heads"


class TalkingHeadsAttention(MultiHeadAttention):
    """MHSA with a learned heads x heads map on the logits and another on the softmax weights."""

    needs_matrix = True

    def __init__(self, dim: int, num_heads: int, config: TalkingHeadsConfig) -> None:
        super().__init__(dim, num_heads, config)
        self.mix_logits = HeadMix(self.num_heads)
        self.mix_weights = HeadMix(self.num_heads)

    def transform_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self.mix_logits(logits)

    def transform_weights(self, weights: torch.Tensor) -> torch.Tensor:
        return self.mix_weights(weights)


def build_talking_heads(config: TalkingHeadsConfig, ctx: BuildContext) -> TalkingHeadsAttention:
    """Talking-heads attention (CaiT)."""
    return TalkingHeadsAttention(ctx.dim, ctx.num_heads, config)


# -- the CaiT architecture ----------------------------------------------------------------------
class CaitConfig(LateClassTokenConfig):
    """CaiT: LayerScale + talking heads on patch tokens, then ``cls_depth`` class-attention blocks."""

    type: Literal["cait"] = "cait"
    attention: ComponentSpec("attention") = component_default(type="talking-heads")
    block: ComponentSpec("block") = component_default(type="pre-norm", layer_scale=1e-5)
    class_block: ComponentSpec("block") = component_default(
        type="class-attention", layer_scale=1e-5
    )


class Cait(LateClassTokenTransformer):
    """CaiT: class-attention image transformer.

    The shared late-class-token model with CaiT's parts (see :class:`CaitConfig`).
    """


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "talking-heads",
        build_talking_heads,
        TalkingHeadsConfig,
        tags={"mask", "needs-matrix"},
        example={"config": {}, "model": {}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register("cait", Cait, CaitConfig, tags={"image", "tokens", "mask"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "cait")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
