"""Built-in plugin: BEiT and BEiT v2 (the masked-image-modelling fine-tuning baselines).

BEiT (Bao et al., ICLR 2022, arXiv:2106.08254; code: microsoft/unilm ``beit``, ported as timm
``beit.py`` and transformers ``Beit*``) and BEiT v2 (Peng et al., 2022, arXiv:2208.06366; same
backbone, other pre-training) fine-tune a ViT that differs from the base in parts only, each a
registered component or option usable in any spec:

* **whole-sequence relative position bias** -- attention ``rel-pos`` (registered here; the
  module is :mod:`vitzoo.components.relative_position`): every block learns its own per-head
  table over the patch offsets plus three entries for the class token; no absolute positions
  (``posenc: none``). ``set_input_size`` resamples the tables as BEiT's reference does;
* **q / v biases, the key's fixed at zero** -- ``attention.key_bias: false``;
* **LayerScale** -- ``block.layer_scale`` (0.1 for BEiT-B, 1e-5 for BEiT-L and BEiT v2);
* **mean pooling with a post-pool norm** -- ``pool: mean``, ``fc_norm: true``,
  ``final_norm: false``.

So ``beit`` is the ViT base with these defaults. BEiT's pre-training variant with one table
shared by all blocks (``use_shared_rel_pos_bias``) is not covered: no released fine-tuned
classifier uses it.
"""

from __future__ import annotations

from typing import Any, Literal

from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.beit_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.relative_position import RelPosAttention, RelPosAttentionConfig
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.registration_examples import TINY_VIT


class BeitConfig(VitConfig):
    """BEiT / BEiT v2: relative position bias per block, q/v biases, LayerScale, mean pooling
    with a post-pool norm (defaults: BEiT-B/16 at 224 px)."""

    type: Literal["beit"] = "beit"
    posenc: ComponentSpec("posenc") = component_default(type="none")
    attention: ComponentSpec("attention") = component_default(type="rel-pos", key_bias=False)
    block: ComponentSpec("block") = component_default(type="pre-norm", layer_scale=0.1)
    pool: ComponentSpec("pooling") = component_default(type="mean")
    fc_norm: bool = True
    final_norm: bool = False


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "rel-pos",
        RelPosAttention,
        RelPosAttentionConfig,
        tags={"image", "mask", "sdpa"},
        needs={"grid-2d", "fixed-grid"},
        summary="attention + a learned relative-position bias over the whole sequence (BEiT)",
        example={"config": {"key_bias": False}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register("beit", VisionTransformer, BeitConfig, tags={"image", "tokens"}, example=TINY_VIT)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "beit")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
