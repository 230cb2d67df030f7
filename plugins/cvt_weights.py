"""Hugging Face CvT (``CvtForImageClassification``) -> vitzoo ``cvt``: rename rules only.

The released CvT models (microsoft/cvt-13, -21, -w24) have a class token in the last stage only,
depthwise-conv + BatchNorm q/k/v projections (kernel 3, padding 1, q stride 1, k/v stride 2) and
attention scaled by 1/sqrt(stage width), which is what vitzoo's ``cvt`` builds. HF's CvT modules
use torch's default LayerNorm eps (1e-5) whatever ``layer_norm_eps`` says, so the spec keeps 1e-5.
Settings vitzoo cannot express (other projection methods, class tokens in earlier stages, mean
pooling after a token LayerNorm) are refused with a plain error instead of loading something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo.errors import WeightsError
from vitzoo.weights import Rename, WeightConverter
from vitzoo.weights.hf_config import hf_num_classes

_STAGE = r"cvt\.encoder\.stages\.(\d+)\."
_LAYER = _STAGE + r"layers\.(\d+)\."
_ATTN = _LAYER + r"attention\.attention\."
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

HF_CVT_RULES = (
    Rename(_STAGE + r"cls_token", r"stages.\1.cls_token"),
    Rename(
        _STAGE + r"embedding\.convolution_embeddings\.projection\.(weight|bias)",
        r"stages.\1.embed.proj.\2",
    ),
    Rename(
        _STAGE + r"embedding\.convolution_embeddings\.normalization\.(weight|bias)",
        r"stages.\1.embed.norm.\2",
    ),
    Rename(
        _ATTN + r"convolution_projection_(q|k|v)\w*\.convolution_projection\.convolution\.weight",
        r"stages.\1.blocks.\2.attn.conv_\3.0.weight",
    ),
    Rename(
        _ATTN + r"convolution_projection_(q|k|v)\w*\.convolution_projection\.normalization\." + _BN,
        r"stages.\1.blocks.\2.attn.conv_\3.1.\4",
    ),
    Rename(_ATTN + r"projection_(q|k|v)\w*\.(weight|bias)", r"stages.\1.blocks.\2.attn.proj_\3.\4"),
    Rename(
        _LAYER + r"attention\.output\.dense\.(weight|bias)", r"stages.\1.blocks.\2.attn.proj.\3"
    ),
    Rename(_LAYER + r"intermediate\.dense\.(weight|bias)", r"stages.\1.blocks.\2.mlp.fc1.\3"),
    Rename(_LAYER + r"output\.dense\.(weight|bias)", r"stages.\1.blocks.\2.mlp.fc2.\3"),
    Rename(_LAYER + r"layernorm_before\.(weight|bias)", r"stages.\1.blocks.\2.norm1.\3"),
    Rename(_LAYER + r"layernorm_after\.(weight|bias)", r"stages.\1.blocks.\2.norm2.\3"),
    Rename(r"layernorm\.(weight|bias)", r"head_norm.\1"),
    Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
)


def _same(config: Mapping[str, Any], key: str, expected: Any) -> None:
    values = config.get(key)
    if values is not None and any(v != expected for v in values):
        raise WeightsError(
            f"config.json: CvT {key}={values} is not expressible in vitzoo's cvt "
            f"(it builds {key}={expected} in every stage)"
        )


def spec_from_hf_cvt(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF CvtConfig -> a vitzoo cvt spec computing the same function (or a plain refusal)."""
    stages = len(config["embed_dim"])
    cls_tokens = list(config.get("cls_token", [False] * (stages - 1) + [True]))
    if any(cls_tokens[:-1]) or not cls_tokens[-1]:
        raise WeightsError(
            f"config.json: CvT cls_token={cls_tokens}; vitzoo's cvt supports a class token in "
            f"the last stage only (as in every released CvT)"
        )
    _same(config, "qkv_projection_method", "dw_bn")
    _same(config, "padding_q", 1)
    _same(config, "padding_kv", 1)
    kernels, q_strides, kv_strides = (
        set(config.get(k, [d])) for k, d in (("kernel_qkv", 3), ("stride_q", 1), ("stride_kv", 2))
    )
    ratios = set(config.get("mlp_ratio", [4.0]))
    if len(kernels) > 1 or len(q_strides) > 1 or len(kv_strides) > 1 or len(ratios) > 1:
        raise WeightsError(
            "config.json: CvT with per-stage kernel/stride/mlp_ratio is not supported"
        )
    if kernels != {3}:
        raise WeightsError(
            f"config.json: CvT kernel_qkv={sorted(kernels)}; vitzoo pads k//2, needs 3"
        )
    if not all(config.get("qkv_bias", [True])):
        raise WeightsError("config.json: CvT qkv_bias=false is not expressible in vitzoo's cvt")
    return {
        "model": {
            "type": "cvt",
            "image_size": 224,
            "in_chans": config.get("num_channels", 3),
            "num_classes": hf_num_classes(config),
            "dims": list(config["embed_dim"]),
            "depths": list(config["depth"]),
            "num_heads": list(config["num_heads"]),
            "patch_sizes": list(config["patch_sizes"]),
            "patch_strides": list(config["patch_stride"]),
            "patch_padding": list(config["patch_padding"]),
            "attention": {
                "type": "conv-proj",
                "kernel_size": 3,
                "q_stride": q_strides.pop(),
                "kv_stride": kv_strides.pop(),
                "scale_by": "width",
            },
            "mlp": {"type": "mlp", "ratio": ratios.pop()},
        }
    }


HF_CVT = WeightConverter(
    name="hf-cvt",
    source="hf",
    architectures=("cvt",),
    rules=HF_CVT_RULES,
    spec_from_config=spec_from_hf_cvt,
    config_names=("cvt",),
    summary="transformers CvtForImageClassification / CvtModel",
    verified_by="tests/test_weights_hf.py",
)
