"""Weight converters for LeViT: timm's layout and Hugging Face's (LevitForImageClassification*).

Data only, with index arithmetic where the layouts number layers differently. vitzoo numbers a
stage's residuals [attention, MLP, attention, MLP, ...] and keeps the shrinking attention (and
its MLP) at the start of the stage it produces; timm names each block's ``attn`` / ``mlp``
(block ``i`` -> residuals ``2i``, ``2i + 1``); Hugging Face appends the shrinking attention and
its MLP to the end of the previous stage, so which stage an MLP belongs to depends on the depth.
Each classifier has its own BatchNorm in all three (vitzoo: ``head: {norm: batchnorm}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vitzoo.weights import KeepInit, Rename, Unused, WeightConverter
from vitzoo.weights.hf_config import hf_num_classes

Shapes = Mapping[str, tuple[int, ...]]

_STEM = r"(\d+)"
_BN_PARTS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _stem_conv(match: re.Match[str], shapes: Shapes) -> str:
    """stem conv k (1-based) -> stem.{k-1}.0 (conv) / .1 (BatchNorm)"""
    part = "0" if match["kind"] in ("linear", "convolution") else "1"
    return f"stem.{int(match['k']) - 1}.{part}.{match['rest']}"


def _timm_tail(rest: str) -> str:
    """timm's LinearNorm wrappers (``proj.ln``, ``q.ln``, MLP ``ln1`` / ``ln2``) -> vitzoo's."""
    rest = rest.replace("proj.ln.", "proj.1.").replace("q.ln.", "q.")
    return re.sub(r"^ln([12])\.", lambda m: "0." if m[1] == "1" else "2.", rest)


def _timm_block(match: re.Match[str], shapes: Shapes) -> str:
    """timm stages.S.blocks.i.attn / .mlp -> vitzoo stages.S.blocks.{2i / 2i + 1}.fn"""
    index = 2 * int(match["block"]) + (match["kind"] == "mlp")
    return f"stages.{match['stage']}.blocks.{index}.fn.{_timm_tail(match['rest'])}"


def _timm_downsample(match: re.Match[str], shapes: Shapes) -> str:
    """timm stages.S.downsample.attn_downsample / .mlp -> vitzoo stages.S.downsample.{0 / 1.fn}"""
    part = "0" if match["kind"] == "attn_downsample" else "1.fn"
    return f"stages.{match['stage']}.downsample.{part}.{_timm_tail(match['rest'])}"


_LINEAR_BN = {"linear": "linear", "bn": "bn", "batch_norm": "bn"}


def _levit_linear(path: str) -> str:
    """``qkv.linear.weight`` style tail, HF's ``batch_norm`` called ``bn`` as in timm / vitzoo."""
    head, kind, param = path.rsplit(".", 2)
    return f"{head}.{_LINEAR_BN[kind]}.{param}"


TIMM_LEVIT_RULES = (
    Rename(rf"stem\.conv(?P<k>{_STEM})\.(?P<kind>linear|bn)\.(?P<rest>.*)", _stem_conv),
    Rename(
        r"stages\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)\.(?P<kind>attn|mlp)\.(?P<rest>.*)",
        _timm_block,
    ),
    Rename(
        r"stages\.(?P<stage>\d+)\.downsample\.(?P<kind>attn_downsample|mlp)\.(?P<rest>.*)",
        _timm_downsample,
    ),
    Rename(r"head\.bn\.(.*)", r"head.fc.0.\1"),
    Rename(r"head\.linear\.(.*)", r"head.fc.1.\1"),
    Rename(r"head_dist\.bn\.(.*)", r"head.fc_dist.0.\1"),
    Rename(r"head_dist\.linear\.(.*)", r"head.fc_dist.1.\1"),
    Unused(r".*attention_bias_idxs", "derived offset index vitzoo recomputes"),
)


def _residuals_in_stage(stage: int, shapes: Shapes) -> int:
    pattern = re.compile(rf"stages\.{stage}\.blocks\.(\d+)\.")
    return 1 + max((int(m[1]) for k in shapes if (m := pattern.match(k))), default=-1)


def _hf_mlp(match: re.Match[str], shapes: Shapes) -> str:
    """HF stages.S.layers.L MLP -> vitzoo stages.S.blocks.L, or, past stage S's own residuals,
    the MLP after the shrinking attention (vitzoo stages.{S+1}.downsample.1)"""
    stage, layer = int(match["stage"]), int(match["layer"])
    part = "0" if match["which"] == "up" else "2"
    tail = f"{_LINEAR_BN[match['kind']]}.{match['param']}"
    if layer < _residuals_in_stage(stage, shapes):
        return f"stages.{stage}.blocks.{layer}.fn.{part}.{tail}"
    return f"stages.{stage + 1}.downsample.1.fn.{part}.{tail}"


def _hf_attention(match: re.Match[str], shapes: Shapes) -> str:
    """HF attention residual stages.S.layers.L.module -> vitzoo stages.S.blocks.L.fn"""
    return f"stages.{match['stage']}.blocks.{match['layer']}.fn.{_hf_attention_tail(match)}"


def _hf_shrink(match: re.Match[str], shapes: Shapes) -> str:
    """HF shrinking attention (end of stage S) -> vitzoo stages.{S+1}.downsample.0"""
    return f"stages.{int(match['stage']) + 1}.downsample.0.{_hf_attention_tail(match)}"


_HF_ATTENTION_PARTS = {
    "queries_keys_values": "qkv",
    "keys_values": "kv",
    "queries": "q",
    "projection": "proj.1",
}


def _hf_attention_tail(match: re.Match[str]) -> str:
    if match["part"] == "attention_biases":
        return "attention_biases"
    return _levit_linear(f"{_HF_ATTENTION_PARTS[match['part']]}.{match['kind']}.{match['param']}")


_HF_LAYER = r"levit\.encoder\.stages\.(?P<stage>\d+)\.layers\.(?P<layer>\d+)\."


def _hf_attention_rule(prefix: str, target: Any) -> tuple[Rename, Rename]:
    return (
        Rename(_HF_LAYER + prefix + r"(?P<part>attention_biases)(?P<kind>)(?P<param>)", target),
        Rename(
            _HF_LAYER
            + prefix
            + r"(?P<part>queries_keys_values|keys_values|queries|projection)\."
            + rf"(?P<kind>linear|batch_norm)\.(?P<param>{_BN_PARTS})",
            target,
        ),
    )


HF_LEVIT_RULES = (
    Rename(
        rf"levit\.patch_embeddings\.embedding_layer_(?P<k>{_STEM})\.(?P<kind>convolution|batch_norm)"
        r"\.(?P<rest>.*)",
        _stem_conv,
    ),
    *_hf_attention_rule(r"module\.", _hf_attention),
    *_hf_attention_rule("", _hf_shrink),
    Rename(
        _HF_LAYER
        + r"module\.linear_(?P<which>up|down)\.(?P<kind>linear|batch_norm)\."
        + rf"(?P<param>{_BN_PARTS})",
        _hf_mlp,
    ),
    Rename(r"classifier\.batch_norm\.(.*)", r"head.fc.0.\1"),
    Rename(r"classifier\.linear\.(.*)", r"head.fc.1.\1"),
    Rename(r"classifier_distill\.batch_norm\.(.*)", r"head.fc_dist.0.\1"),
    Rename(r"classifier_distill\.linear\.(.*)", r"head.fc_dist.1.\1"),
    Unused(r".*attention_bias_idxs", "derived offset index vitzoo recomputes"),
    KeepInit(r"head\..*", "a feature checkpoint (LevitModel) has no classifier"),
)


def _same_for_every_stage(config: Mapping[str, Any], key: str) -> Any:
    values = config[key]
    if not isinstance(values, list):
        return values
    if len(set(values)) != 1:
        raise ValueError(
            f"LeViT config.json: vitzoo's levit takes one {key} for every stage, got {values}"
        )
    return values[0]


def spec_from_hf_levit(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF LevitConfig -> the vitzoo levit spec with the same function."""
    down = config.get("down_ops") or [["Subsample", 16, 8, 4, 2, 2]]
    arch = (config.get("architectures") or [""])[0]
    distilled = arch != "LevitForImageClassification"
    model: dict[str, Any] = {
        "type": "levit",
        "image_size": config.get("image_size", 224),
        "in_chans": config.get("num_channels", 3),
        "num_classes": hf_num_classes(config),
        "dims": list(config["hidden_sizes"]),
        "depths": list(config["depths"]),
        "num_heads": list(config["num_attention_heads"]),
        "key_dim": _same_for_every_stage(config, "key_dim"),
        "attn_ratio": float(_same_for_every_stage(config, "attention_ratio")),
        "mlp_ratio": float(_same_for_every_stage(config, "mlp_ratio")),
        "down_attn_ratio": float(down[0][3]),
        "down_mlp_ratio": float(down[0][4]),
        "head": {"type": "distillation" if distilled else "linear", "norm": "batchnorm"},
    }
    return {"model": model}


def _looks_like_timm_levit(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "stem.conv1.linear.weight" in tensors


def _looks_like_hf_levit(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "levit.patch_embeddings.embedding_layer_1.convolution.weight" in tensors


TIMM_LEVIT = WeightConverter(
    name="timm-levit",
    source="timm",
    architectures=("levit",),
    rules=TIMM_LEVIT_RULES,
    detect=_looks_like_timm_levit,
    config_names=("levit_",),
    summary="timm Levit / LevitDistilled state dicts (non-conv variants)",
    verified_by="tests/test_weights_released_functions.py",
)

HF_LEVIT = WeightConverter(
    name="hf-levit",
    source="hf",
    architectures=("levit",),
    rules=HF_LEVIT_RULES,
    detect=_looks_like_hf_levit,
    spec_from_config=spec_from_hf_levit,
    config_names=("levit",),
    summary="transformers LevitForImageClassification(WithTeacher) / LevitModel",
    verified_by="tests/test_weights_released_functions.py",
)

CONVERTERS = (TIMM_LEVIT, HF_LEVIT)
