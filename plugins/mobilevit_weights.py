"""Hugging Face MobileViT (``MobileViTForImageClassification``) -> vitzoo ``mobilevit``.

Rename rules plus the q/k/v concatenation. HF's five encoder layers are vitzoo's five stages:
the MV2 blocks (``layer.i.layer.j`` or a MobileViT layer's ``downsampling_layer``) come first,
then the MobileViT block at index 1 of the stage. HF's conv layers hold ``convolution`` and
``normalization``; vitzoo's ConvNormAct holds them as ``0`` and ``1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo.errors import WeightsError
from vitzoo.weights import Concat, Rename, WeightConverter
from vitzoo.weights.hf_config import hf_num_classes

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_ENC = r"mobilevit\.encoder\.layer\.(\d+)\."
_MV2 = {"expand_1x1": "expand", "conv_3x3": "depthwise", "reduce_1x1": "project"}
_BLOCK = {"conv_kxk": "local", "conv_projection": "from_tokens", "fusion": "fuse"}
_TRANSFORMER = _ENC + r"transformer\.layer\.(\d+)\."


def _conv_layer(source: str, target: str, groups: int) -> tuple[Rename, Rename]:
    """HF MobileViTConvLayer (convolution + normalization) -> vitzoo ConvNormAct (0 + 1).

    ``groups`` is how many regex groups ``source`` has, so the BatchNorm field is group
    ``groups + 1`` of the second rule.
    """
    return (
        Rename(source + r"\.convolution\.weight", target + ".0.weight"),
        Rename(source + r"\.normalization\." + _BN, target + rf".1.\{groups + 1}"),
    )


HF_MOBILEVIT_RULES = (
    *_conv_layer(r"mobilevit\.conv_stem", "stem", 0),
    *_conv_layer(r"mobilevit\.conv_1x1_exp", "expand", 0),
    *(
        rule
        for hf, ours in _MV2.items()
        for rule in (
            *_conv_layer(_ENC + r"layer\.(\d+)\." + hf, rf"stages.\1.\2.{ours}", 2),
            *_conv_layer(_ENC + r"downsampling_layer\." + hf, rf"stages.\1.0.{ours}", 1),
        )
    ),
    *(
        rule
        for hf, ours in _BLOCK.items()
        for rule in _conv_layer(_ENC + hf, rf"stages.\1.1.{ours}", 1)
    ),
    Rename(_ENC + r"conv_1x1\.convolution\.weight", r"stages.\1.1.to_tokens.weight"),
    Concat(
        (
            _TRANSFORMER + r"attention\.attention\.query\.(weight|bias)",
            r"mobilevit.encoder.layer.\1.transformer.layer.\2.attention.attention.key.\3",
            r"mobilevit.encoder.layer.\1.transformer.layer.\2.attention.attention.value.\3",
        ),
        r"stages.\1.1.blocks.\2.attn.qkv.\3",
    ),
    Rename(
        _TRANSFORMER + r"attention\.output\.dense\.(weight|bias)",
        r"stages.\1.1.blocks.\2.attn.proj.\3",
    ),
    Rename(
        _TRANSFORMER + r"intermediate\.dense\.(weight|bias)", r"stages.\1.1.blocks.\2.mlp.fc1.\3"
    ),
    Rename(_TRANSFORMER + r"output\.dense\.(weight|bias)", r"stages.\1.1.blocks.\2.mlp.fc2.\3"),
    Rename(_TRANSFORMER + r"layernorm_before\.(weight|bias)", r"stages.\1.1.blocks.\2.norm1.\3"),
    Rename(_TRANSFORMER + r"layernorm_after\.(weight|bias)", r"stages.\1.1.blocks.\2.norm2.\3"),
    Rename(_ENC + r"layernorm\.(weight|bias)", r"stages.\1.1.norm.\2"),
    Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
)


def spec_from_hf_mobilevit(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF MobileViTConfig -> a vitzoo mobilevit spec with the same function."""
    neck = list(config["neck_hidden_sizes"])
    ratio = float(config.get("expand_ratio", 4.0))
    if config.get("hidden_act", "silu") not in ("silu", "swish"):
        raise WeightsError(
            f"config.json: MobileViT hidden_act={config.get('hidden_act')!r}; vitzoo's mobilevit "
            f"uses SiLU throughout (as every released MobileViT)"
        )
    if int(config.get("output_stride", 32)) != 32 or int(config.get("conv_kernel_size", 3)) != 3:
        raise WeightsError(
            "config.json: MobileViT output_stride / conv_kernel_size other than 32 / 3"
        )
    # HF rounds MV2 widths up to a multiple of 8 and always expands; vitzoo uses round(c * ratio).
    if ratio == 1 or any(round(c * ratio) % 8 for c in neck[:5]):
        raise WeightsError(
            f"config.json: MobileViT expand_ratio={ratio} with widths {neck[:5]} gives MV2 widths "
            f"HF rounds to multiples of 8; vitzoo's mobilevit does not"
        )
    eps = float(config.get("layer_norm_eps", 1e-5))
    return {
        "model": {
            "type": "mobilevit",
            "image_size": config.get("image_size", 256),
            "in_chans": config.get("num_channels", 3),
            "num_classes": hf_num_classes(config),
            "stem_dim": neck[0],
            "channels": neck[1:6],
            "mv2_blocks": [1, 3, 1, 1, 1],
            "strides": [1, 2, 2, 2, 2],
            "transformer_dims": [0, 0, *config["hidden_sizes"]],
            "transformer_depths": [0, 0, 2, 4, 3],
            "expand_ratio": ratio,
            "patch_size": config.get("patch_size", 2),
            "num_heads": config.get("num_attention_heads", 4),
            "final_dim": neck[6],
            "attention": {"type": "mhsa", "qkv_bias": bool(config.get("qkv_bias", True))},
            "mlp": {
                "type": "mlp",
                "ratio": float(config.get("mlp_ratio", 2.0)),
                "activation": "silu",
            },
            "block": {"type": "pre-norm", "norm_eps": eps},
        }
    }


HF_MOBILEVIT = WeightConverter(
    name="hf-mobilevit",
    source="hf",
    architectures=("mobilevit",),
    rules=HF_MOBILEVIT_RULES,
    spec_from_config=spec_from_hf_mobilevit,
    config_names=("mobilevit",),
    summary="transformers MobileViTForImageClassification / MobileViTModel",
    verified_by="tests/test_weights_hf.py",
)
