"""Built-in plugin: EVA-02 (Fang et al., "EVA-02: A Visual Representation for Neon Genesis",
arXiv:2303.11331; code: baaivision/EVA ``EVA-02``, ported as timm ``eva.py``).

EVA-02 is a plain ViT whose parts are all registered components or options, usable in any spec:

* **2-D RoPE beside learned positions** -- attention ``rope`` (:mod:`vitzoo.components.rope`) with
  EVA-02's layout: frequencies ``1 / 10000^(i / (d/4))``, the first half of each head's
  channel pairs turning with the row and the second with the column (``axis_order:
  y-first``), adjacent channels paired (``pairs: adjacent``), and coordinates rescaled to the
  16 x 16 pre-training grid (``ref_grid``), so the 448-px fine-tunes rotate as at 224 px. The
  class token is not rotated;
* **q / v biases, the key's fixed at zero** -- ``attention.key_bias: false``;
* **SwiGLU MLP** of width ``8/3 * dim`` (``swiglu``, :mod:`vitzoo.components.mlp`), with a LayerNorm over the hidden units
  before the output projection at B and L (``norm: layernorm``, EVA-02's sub-LN);
* **mean pooling with a post-pool norm** -- ``pool: mean``, ``fc_norm: true``,
  ``final_norm: false``.

So ``eva02`` is the ViT base with these defaults (EVA-02-B/14 at 224 px). The released models
differ in layout only where timm keeps q, k, v apart (B, L) or the SwiGLU halves apart
(``fc1_g`` / ``fc1_x``, B and L); the converter joins them (:mod:`.eva_weights`).
"""

from __future__ import annotations

from typing import Any, Literal

from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.eva_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.registration_examples import TINY_VIT

#: EVA-02's RoPE: timm ``RotaryEmbeddingCat(in_pixels=False, ref_feat_shape=(16, 16))``.
EVA02_ROPE = dict(
    type="rope",
    rope="axial",
    theta=10000.0,
    pairs="adjacent",
    axis_order="y-first",
    ref_grid=(16, 16),
    key_bias=False,
)


class Eva02Config(VitConfig):
    """EVA-02: learned positions + EVA-02's 2-D RoPE with q/v biases, SwiGLU MLP, mean pooling
    with a post-pool norm (defaults: EVA-02-B/14 at 224 px, without the sub-LN of B/L)."""

    type: Literal["eva02"] = "eva02"
    patch: ComponentSpec("patchifier") = component_default(type="linear", patch_size=14)
    attention: ComponentSpec("attention") = component_default(**EVA02_ROPE)
    mlp: ComponentSpec("mlp") = component_default(type="swiglu")
    pool: ComponentSpec("pooling") = component_default(type="mean")
    fc_norm: bool = True
    final_norm: bool = False


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "eva02",
        VisionTransformer,
        Eva02Config,
        tags={"image", "tokens"},
        example=TINY_VIT | {"mlp": {"type": "swiglu", "norm": "layernorm"}},
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "eva")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
