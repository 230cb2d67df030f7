"""Weight converters for AIMv2 (``aimv2``): timm's ``aimv2_*``, the official release
(apple/ml-aim ``AIMv2VisionEncoder``) and transformers' ``Aimv2VisionModel``.

Data only. timm's layout is the ViT base's plus the patch RMSNorm (``patch_embed.norm``) and
its SwiGLU's two input projections ``mlp.fc1_g`` (gate) and ``mlp.fc1_x``, concatenated into
vitzoo's packed ``mlp.fc1`` (gate first). The official layout nests the same tensors under
``preprocessor.`` (``pos_embed``, ``patchifier.proj``, ``patchifier.norm``) and ``trunk.``
(``blocks.N.{attn.qkv, attn.proj, norm_1, norm_2, mlp.fc1 (gate), mlp.fc3, mlp.fc2}``,
``post_trunk_norm``). transformers names the same tensors
``embeddings.patch_embed`` / ``embeddings.rms_norm`` / ``embeddings.position_embedding``
(an ``nn.Embedding``: a (N, D) table, reshaped to (1, N, D)), ``encoder.layers.N.attention.
{q,k,v,out}_proj``, ``ffn.{gate,up,down}_proj``, ``rms_norm1/2`` and ``rms_norm``; its config's
``qkv_bias`` covers the output projection too. The attention-pooling head of
``use_head: true`` checkpoints (a learned query attending to the tokens) and the
native-resolution models (``is_native``: a fixed sin-cos table at any size) are not supported:
their config is refused in one plain line rather than loaded into another function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo_plugins._vit_rules import TIMM_VIT_RULES

from vitzoo.errors import WeightsError
from vitzoo.weights import Concat, Rename, Reshape, WeightConverter
from vitzoo.weights.hf_config import hf_activation

TEST = "tests/test_weights_aimv2.py"

TIMM_AIMV2 = WeightConverter(
    name="timm-aimv2",
    source="timm",
    architectures=("aimv2",),
    rules=(
        Rename(r"patch_embed\.norm\.weight", r"patch.norm.weight"),
        Concat(
            (r"blocks\.(\d+)\.mlp\.fc1_g\.(weight|bias)", r"blocks.\1.mlp.fc1_x.\2"),
            r"blocks.\1.mlp.fc1.\2",
        ),
        *TIMM_VIT_RULES,
    ),
    detect=lambda tensors, config: (
        "patch_embed.norm.weight" in tensors and "blocks.0.mlp.fc1_g.weight" in tensors
    ),
    summary="timm aimv2_* state dicts (patch RMSNorm, bias-free SwiGLU blocks)",
    verified_by=TEST,
)


def spec_from_hf_aimv2(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF Aimv2VisionConfig -> a vitzoo ``aimv2`` spec with the same function."""
    for flag, what in (
        ("is_native", "native-resolution AIMv2 (a fixed sin-cos table at any size)"),
        ("use_head", "the attention-pooling head (use_head: true)"),
    ):
        if config.get(flag, flag == "use_head"):
            raise WeightsError(f"config.json: {what} is not supported by the aimv2 converter")
    eps = float(config.get("rms_norm_eps", 1e-5))
    qkv_bias = bool(config.get("qkv_bias", False))
    if hf_activation(config.get("hidden_act", "silu")) != "silu":
        raise WeightsError(
            f"config.json: hidden_act={config.get('hidden_act')!r}; AIMv2's MLP is SwiGLU (silu)"
        )
    model = {
        "type": "aimv2",
        "image_size": config.get("image_size", 224),
        "in_chans": config.get("num_channels", 3),
        "num_classes": 0,
        "dim": config["hidden_size"],
        "depth": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "patch": {
            "type": "linear",
            "patch_size": config.get("patch_size", 14),
            "norm": "rmsnorm",
            "norm_eps": eps,
        },
        "attention": {"type": "mhsa", "qkv_bias": qkv_bias, "proj_bias": qkv_bias},
        "mlp": {
            "type": "swiglu",
            "hidden_dim": config["intermediate_size"],
            "bias": bool(config.get("mlp_bias", False)),
        },
        "block": {"type": "pre-norm", "norm": "rmsnorm", "norm_eps": eps},
        "norm_eps": eps,
    }
    return {"model": model}


_TRUNK = r"trunk\.blocks\.(\d+)\."
OFFICIAL_AIMV2 = WeightConverter(
    name="official-aimv2",
    source="official",
    architectures=("aimv2",),
    rules=(
        Rename(r"preprocessor\.pos_embed", r"posenc.pos_embed"),
        Rename(r"preprocessor\.patchifier\.proj\.(weight|bias)", r"patch.proj.\1"),
        Rename(r"preprocessor\.patchifier\.norm\.weight", r"patch.norm.weight"),
        Rename(_TRUNK + r"attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
        Rename(_TRUNK + r"norm_(1|2)\.weight", r"blocks.\1.norm\2.weight"),
        Concat(
            (_TRUNK + r"mlp\.fc1\.(weight|bias)", r"trunk.blocks.\1.mlp.fc3.\2"),
            r"blocks.\1.mlp.fc1.\2",
        ),
        Rename(_TRUNK + r"mlp\.fc2\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
        Rename(r"trunk\.post_trunk_norm\.weight", r"norm.weight"),
    ),
    detect=lambda tensors, config: "preprocessor.patchifier.proj.weight" in tensors,
    summary="apple/ml-aim AIMv2VisionEncoder checkpoints (no attention-pooling head)",
    verified_by=TEST,
)

_LAYER = r"encoder\.layers\.(\d+)\."
HF_AIMV2 = WeightConverter(
    name="hf-aimv2",
    source="hf",
    architectures=("aimv2",),
    rules=(
        Rename(r"embeddings\.patch_embed\.(weight|bias)", r"patch.proj.\1"),
        Rename(r"embeddings\.rms_norm\.weight", r"patch.norm.weight"),
        Rename(r"embeddings\.position_embedding\.weight", r"posenc.pos_embed", (Reshape(),)),
        Concat(
            (
                _LAYER + r"attention\.q_proj\.(weight|bias)",
                r"encoder.layers.\1.attention.k_proj.\2",
                r"encoder.layers.\1.attention.v_proj.\2",
            ),
            r"blocks.\1.attn.qkv.\2",
        ),
        Rename(_LAYER + r"attention\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
        Concat(
            (_LAYER + r"ffn\.gate_proj\.(weight|bias)", r"encoder.layers.\1.ffn.up_proj.\2"),
            r"blocks.\1.mlp.fc1.\2",
        ),
        Rename(_LAYER + r"ffn\.down_proj\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
        Rename(_LAYER + r"rms_norm(1|2)\.weight", r"blocks.\1.norm\2.weight"),
        Rename(r"rms_norm\.weight", r"norm.weight"),
    ),
    summary="transformers Aimv2VisionModel (use_head: false; fixed-size learned positions)",
    spec_from_config=spec_from_hf_aimv2,
    config_names=("aimv2_vision_model",),
    verified_by=TEST,
)


CONVERTERS = (TIMM_AIMV2, OFFICIAL_AIMV2, HF_AIMV2)
