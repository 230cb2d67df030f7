"""Weight converters for the ViT base (vit, deit): timm's and Hugging Face's key layouts.

Data only: rename rules and the q/k/v concatenation. The spec derived from a Hugging Face
``config.json`` carries every setting that changes the function (LayerNorm eps 1e-12, qkv bias,
MLP width and activation), so converted models compute what the source computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo_plugins._vit_rules import TIMM_VIT_RULES

from vitzoo.weights import Concat, KeepInit, Rename, Unused, WeightConverter
from vitzoo.weights.hf_config import hf_activation, hf_num_classes


def _looks_like_timm_vit(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "patch_embed.proj.weight" in tensors and "blocks.0.attn.qkv.weight" in tensors


TIMM_VIT = WeightConverter(
    name="timm-vit",
    source="timm",
    architectures=("vit", "deit"),
    rules=TIMM_VIT_RULES,
    detect=_looks_like_timm_vit,
    config_names=("vit_", "deit_"),
    summary="timm VisionTransformer / VisionTransformerDistilled state dicts",
    verified_by="tests/test_weights_timm.py",
)

# Group 1 is the model prefix: "vit." / "deit." in *ForImageClassification, absent in a bare
# ViTModel / DeiTModel checkpoint.
_HF_LAYER = r"((?:vit|deit)\.)?encoder\.layer\.(\d+)\."
_HF_LAYER_V5 = r"((?:vit|deit)\.)?layers\.(\d+)\."
_HF_BASE = r"(?:(?:vit|deit)\.)?"
HF_VIT_RULES = (
    Concat(
        (
            _HF_LAYER + r"attention\.attention\.query\.(weight|bias)",
            r"\1encoder.layer.\2.attention.attention.key.\3",
            r"\1encoder.layer.\2.attention.attention.value.\3",
        ),
        r"blocks.\2.attn.qkv.\3",
    ),
    Rename(_HF_LAYER + r"attention\.output\.dense\.(weight|bias)", r"blocks.\2.attn.proj.\3"),
    Rename(_HF_LAYER + r"intermediate\.dense\.(weight|bias)", r"blocks.\2.mlp.fc1.\3"),
    Rename(_HF_LAYER + r"output\.dense\.(weight|bias)", r"blocks.\2.mlp.fc2.\3"),
    Rename(_HF_LAYER + r"layernorm_before\.(weight|bias)", r"blocks.\2.norm1.\3"),
    Rename(_HF_LAYER + r"layernorm_after\.(weight|bias)", r"blocks.\2.norm2.\3"),
    # transformers >= 5 names the same tensors this way in memory (files keep the layout above).
    Concat(
        (
            _HF_LAYER_V5 + r"attention\.q_proj\.(weight|bias)",
            r"\1layers.\2.attention.k_proj.\3",
            r"\1layers.\2.attention.v_proj.\3",
        ),
        r"blocks.\2.attn.qkv.\3",
    ),
    Rename(_HF_LAYER_V5 + r"attention\.o_proj\.(weight|bias)", r"blocks.\2.attn.proj.\3"),
    Rename(_HF_LAYER_V5 + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\2.mlp.\3.\4"),
    Rename(_HF_LAYER_V5 + r"layernorm_before\.(weight|bias)", r"blocks.\2.norm1.\3"),
    Rename(_HF_LAYER_V5 + r"layernorm_after\.(weight|bias)", r"blocks.\2.norm2.\3"),
    Rename(_HF_BASE + r"embeddings\.cls_token", r"cls_token"),
    Rename(_HF_BASE + r"embeddings\.distillation_token", r"dist_token"),
    Rename(_HF_BASE + r"embeddings\.position_embeddings", r"posenc.pos_embed"),
    Rename(_HF_BASE + r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch.proj.\1"),
    Rename(_HF_BASE + r"layernorm\.(weight|bias)", r"norm.\1"),
    Rename(r"(?:classifier|cls_classifier)\.(weight|bias)", r"head.fc.\1"),
    Rename(r"distillation_classifier\.(weight|bias)", r"head.fc_dist.\1"),
    Unused(
        _HF_BASE + r"embeddings\.mask_token",
        "the masked-image-modelling mask token is not on the classification path",
    ),
    Unused(
        _HF_BASE + r"pooler\.dense\.(weight|bias)",
        "HF's tanh pooler (ViTModel/DeiTModel) is not on the classification path",
    ),
    KeepInit(r"head\..*", "a feature checkpoint (ViTModel) has no classifier"),
)


def _mlp_width(dim: int, hidden: int) -> dict[str, Any]:
    """``ratio`` where the width is a whole multiple of ``dim`` (as presets say it), else exact."""
    return {"ratio": float(hidden // dim)} if hidden % dim == 0 else {"hidden_dim": hidden}


def spec_from_hf_vit(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF ViTConfig / DeiTConfig -> a vitzoo vit / deit spec with the same function."""
    arch = (config.get("architectures") or [""])[0]
    eps = float(config.get("layer_norm_eps", 1e-12))
    model: dict[str, Any] = {
        "type": "vit",
        "image_size": config.get("image_size", 224),
        "in_chans": config.get("num_channels", 3),
        "num_classes": hf_num_classes(config),
        "dim": config["hidden_size"],
        "depth": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "patch": {"type": "linear", "patch_size": config.get("patch_size", 16)},
        "attention": {"type": "mhsa", "qkv_bias": bool(config.get("qkv_bias", True))},
        "mlp": {
            "type": "mlp",
            **_mlp_width(config["hidden_size"], config["intermediate_size"]),
            "activation": hf_activation(config.get("hidden_act", "gelu")),
        },
        "block": {"type": "pre-norm", "norm_eps": eps},
        "norm_eps": eps,
    }
    if config.get("model_type") == "deit":
        model["type"] = "deit"
        if arch != "DeiTForImageClassificationWithTeacher":
            # DeiTModel keeps the distillation token; the plain classifier reads the class token.
            model["pool"] = {"type": "cls"}
            model["head"] = {"type": "linear"}
    return {"model": model}


HF_VIT = WeightConverter(
    name="hf-vit",
    source="hf",
    architectures=("vit", "deit"),
    rules=HF_VIT_RULES,
    spec_from_config=spec_from_hf_vit,
    config_names=("vit", "deit"),
    summary="transformers ViT* / DeiT* (incl. DeiTForImageClassificationWithTeacher)",
    verified_by="tests/test_weights_hf.py",
)

CONVERTERS = (TIMM_VIT, HF_VIT)
