"""Weight converters for Swin and Swin V2: timm's layout, the official Microsoft layout and
Hugging Face's ``Swin*`` / ``Swinv2*``.

Data only (rename rules, the q/k/v concatenation, one index shift). What differs between them:

* **Where the patch merging lives.** timm >= 0.9 puts it at the start of stage i+1
  (``layers.{i+1}.downsample``), as vitzoo does (``stages.{i+1}.downsample``); the Microsoft code
  (and timm < 0.9, and Hugging Face) at the end of stage i (``layers.{i}.downsample``), so those
  converters move it one stage on. timm's own ``checkpoint_filter_fn`` does the same move.
* **Derived buffers.** The Microsoft checkpoints (and Hugging Face's files) carry the relative
  position index, the shift masks and Swin V2's log-spaced coordinates as persistent buffers;
  vitzoo recomputes them, so they are ``Unused``.
* **Projections.** Hugging Face keeps query / key / value apart (concatenated here); Swinv2's key
  has no bias, and its query / value biases are vitzoo's ``q_bias`` / ``v_bias`` (``key_bias: false``).
  transformers >= 5 renames Swin's (not Swinv2's) tensors in memory (``q_proj``,
  ``relative_position_bias.relative_position_bias_table``, ``mlp.fc1``); files keep the old names;
  both are read.

The spec derived from a Hugging Face ``config.json`` also carries what changes the function:
the window fitting rule (Hugging Face's Swin shrinks the window on both axes when the shorter side
fits in one, ``window_clamp: shortest-side``) and the padding order (pad, then shift).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vitzoo.errors import WeightsError
from vitzoo.weights import Concat, KeepInit, Rename, Unused, WeightConverter
from vitzoo.weights.hf_config import hf_activation, hf_num_classes

_BLOCK_PARTS = r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
_V2_ATTENTION = (
    # Swin V2's per-head logit scale and query / value biases keep their names.
    Rename(
        r"layers\.(\d+)\.blocks\.(\d+)\.attn\.(logit_scale|q_bias|v_bias)",
        r"stages.\1.blocks.\2.attn.\3",
    ),
    Rename(
        r"layers\.(\d+)\.blocks\.(\d+)\.attn\.cpb_mlp\.(0|2)\.(weight|bias)",
        r"stages.\1.blocks.\2.attn.relative_position.mlp.\3.\4",
    ),
)
_BUFFERS = Unused(
    r".*\.(relative_position_index|relative_coords_table|attn_mask)",
    "derived from the window size (position index, shift mask, log-spaced offsets); recomputed",
)


def _next_stage(match: re.Match[str], shapes: Mapping[str, Any]) -> str:
    """``layers.{i}.downsample.X`` (end of stage i) -> ``stages.{i+1}.downsample.X``."""
    return f"stages.{int(match.group(1)) + 1}.downsample.{match.group(2)}"


def _common_rules(head: str) -> tuple[Any, ...]:
    """The tensors timm and the Microsoft code name alike (all but the downsample and head)."""
    return (
        Rename(r"patch_embed\.(proj|norm)\.(weight|bias)", r"stem.\1.\2"),
        Rename(
            rf"layers\.(\d+)\.blocks\.(\d+)\.{_BLOCK_PARTS}\.(weight|bias)",
            r"stages.\1.blocks.\2.\3.\4",
        ),
        Rename(
            r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table",
            r"stages.\1.blocks.\2.attn.relative_position.relative_position_bias_table",
        ),
        *_V2_ATTENTION,
        Rename(r"norm\.(weight|bias)", r"norm.\1"),
        Rename(head, r"head.fc.\1"),
        _BUFFERS,
        KeepInit(r"head\..*", "a headless checkpoint (num_classes=0 at export) has no classifier"),
    )


TIMM_SWIN_RULES = (
    Rename(
        r"layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)", r"stages.\1.downsample.\2.\3"
    ),
    *_common_rules(r"head\.fc\.(weight|bias)"),
)

OFFICIAL_SWIN_RULES = (
    Rename(r"layers\.(\d+)\.downsample\.((?:norm|reduction)\.(?:weight|bias))", _next_stage),
    *_common_rules(r"head\.(weight|bias)"),
)


def _looks_like_swin(tensors: Mapping[str, Any]) -> bool:
    return "patch_embed.proj.weight" in tensors and "layers.0.blocks.0.attn.qkv.weight" in tensors


def _official_layout(tensors: Mapping[str, Any]) -> bool:
    """The Microsoft layout: stage 0 ends with a downsample, or the head is a bare Linear."""
    return "layers.0.downsample.reduction.weight" in tensors or "head.weight" in tensors


def _looks_like_timm_swin(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return _looks_like_swin(tensors) and not _official_layout(tensors)


def _looks_like_official_swin(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return _looks_like_swin(tensors) and _official_layout(tensors)


TIMM_SWIN = WeightConverter(
    name="timm-swin",
    source="timm",
    architectures=("swin", "swinv2"),
    rules=TIMM_SWIN_RULES,
    detect=_looks_like_timm_swin,
    config_names=("swin_", "swinv2_"),
    summary="timm SwinTransformer / SwinTransformerV2 state dicts (timm >= 0.9 layout)",
    verified_by="tests/test_swin.py",
)

OFFICIAL_SWIN = WeightConverter(
    name="official-swin",
    source="official",
    architectures=("swin", "swinv2"),
    rules=OFFICIAL_SWIN_RULES,
    detect=_looks_like_official_swin,
    summary="microsoft/Swin-Transformer checkpoints (swin_*.pth, swinv2_*.pth: the 'model' dict)",
    verified_by="tests/test_swin.py",
)

# -- Hugging Face ------------------------------------------------------------------------------
# Group 1: the model prefix ("swin." / "swinv2." in *ForImageClassification, absent in a bare
# SwinModel); group 2, 3: stage, block.
_HF = r"((?:swin|swinv2)\.)?"
_HF_BLOCK = _HF + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_TO = r"stages.\2.blocks.\3."


def _hf_block(theirs: str, ours: str) -> Rename:
    return Rename(_HF_BLOCK + theirs + r"\.(weight|bias)", _TO + ours + r".\4")


def _hf_qkv(names: tuple[str, str, str], suffix: str) -> Concat:
    """One block's separate query / key / value tensors -> vitzoo's fused ``attn.qkv``."""
    query, key, value = names
    return Concat(
        (
            _HF_BLOCK + re.escape(f"{query}.{suffix}"),
            rf"\1encoder.layers.\2.blocks.\3.{key}.{suffix}",
            rf"\1encoder.layers.\2.blocks.\3.{value}.{suffix}",
        ),
        _TO + "attn.qkv." + suffix,
    )


_HF_QKV_NAMES = (
    ("attention.self.query", "attention.self.key", "attention.self.value"),  # files; Swinv2
    ("attention.q_proj", "attention.k_proj", "attention.v_proj"),  # Swin, transformers >= 5
)


def _hf_next_stage(match: re.Match[str], shapes: Mapping[str, Any]) -> str:
    return f"stages.{int(match.group(2)) + 1}.downsample.{match.group(3)}"


HF_SWIN_RULES = (
    # Swin: every projection has a bias. Swinv2: the key has none, so the bias group is
    # incomplete and its query / value biases fall through to q_bias / v_bias below.
    *(_hf_qkv(names, suffix) for names in _HF_QKV_NAMES for suffix in ("weight", "bias")),
    Rename(_HF_BLOCK + r"attention\.self\.query\.bias", _TO + "attn.q_bias"),
    Rename(_HF_BLOCK + r"attention\.self\.value\.bias", _TO + "attn.v_bias"),
    Rename(_HF_BLOCK + r"attention\.self\.logit_scale", _TO + "attn.logit_scale"),
    Rename(
        _HF_BLOCK + r"attention\.self\.continuous_position_bias_mlp\.(0|2)\.(weight|bias)",
        _TO + r"attn.relative_position.mlp.\4.\5",
    ),
    Rename(
        _HF_BLOCK + r"attention\.(?:self|relative_position_bias)\.relative_position_bias_table",
        _TO + "attn.relative_position.relative_position_bias_table",
    ),
    _hf_block(r"attention\.(?:output\.dense|o_proj)", "attn.proj"),
    _hf_block(r"(?:intermediate\.dense|mlp\.fc1)", "mlp.fc1"),
    _hf_block(r"(?:output\.dense|mlp\.fc2)", "mlp.fc2"),
    _hf_block(r"layernorm_before", "norm1"),
    _hf_block(r"layernorm_after", "norm2"),
    Rename(
        _HF + r"encoder\.layers\.(\d+)\.downsample\.((?:norm|reduction)\.(?:weight|bias))",
        _hf_next_stage,
    ),
    Rename(_HF + r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"stem.proj.\2"),
    Rename(_HF + r"embeddings\.norm\.(weight|bias)", r"stem.norm.\2"),
    Rename(_HF + r"layernorm\.(weight|bias)", r"norm.\2"),
    Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
    _BUFFERS,
    Unused(
        _HF + r"embeddings\.mask_token",
        "the masked-image-modelling token is not on the classification path",
    ),
    KeepInit(r"head\..*", "a feature checkpoint (SwinModel / Swinv2Model) has no classifier"),
)


def _looks_like_hf_swin(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return any(
        f"{prefix}encoder.layers.0.blocks.0.layernorm_before.weight" in tensors
        and f"{prefix}embeddings.patch_embeddings.projection.weight" in tensors
        for prefix in ("", "swin.", "swinv2.")
    )


def spec_from_hf_swin(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF SwinConfig / Swinv2Config -> a vitzoo swin / swinv2 spec with the same function."""
    v2 = config.get("model_type") == "swinv2"
    if config.get("use_absolute_embeddings"):
        raise WeightsError(
            "config.json: use_absolute_embeddings=true (absolute positions on the patch grid) is "
            "not part of vitzoo's swin; no released Swin uses it"
        )
    eps = float(config.get("layer_norm_eps", 1e-5))
    if eps != 1e-5:
        raise WeightsError(
            f"config.json: layer_norm_eps={eps}; vitzoo's swin reproduces Hugging Face's model "
            "with 1e-5 only (its patch-embedding and merging norms always use 1e-5)"
        )
    depths = list(config["depths"])
    window, embed = int(config.get("window_size", 7)), int(config["embed_dim"])
    qkv_bias = bool(config.get("qkv_bias", True))
    attention: dict[str, Any] = {
        "type": "window",
        "mask_padding": False,
        "pad_order": "pad-then-shift",
    }
    model: dict[str, Any] = {
        "type": "swinv2" if v2 else "swin",
        "image_size": config.get("image_size", 224),
        "in_chans": config.get("num_channels", 3),
        "num_classes": hf_num_classes(config),
        "patch_size": config.get("patch_size", 4),
        "dims": [embed * 2**i for i in range(len(depths))],
        "depths": depths,
        "num_heads": list(config["num_heads"]),
        "window_sizes": [window] * len(depths),
        # Hugging Face's Swin shrinks the window on both axes when the shorter side fits in one;
        # Swinv2 decides by the first axis of floor(grid / 2^stage) of the config's image size,
        # which is the same rule wherever the maps halve evenly and the height is not the
        # longer side (every released model: square, 2^k maps).
        "window_clamp": "shortest-side",
        "mlp": {
            "type": "mlp",
            "ratio": float(config.get("mlp_ratio", 4.0)),
            "activation": hf_activation(config.get("hidden_act", "gelu")),
        },
        "attention": attention,
    }
    if v2:
        attention |= {
            "cosine": True,
            "position_bias": "continuous",
            "qkv_bias": bool(qkv_bias),
            "key_bias": False,
        }
        pretrained = list(config.get("pretrained_window_sizes") or [0] * len(depths))
        if any(pretrained):
            model["pretrained_window_sizes"] = pretrained
    else:  # the tables resample as the swin presets' do, should the model change its window
        attention |= {"qkv_bias": qkv_bias, "table_resampling": "geometric"}
    return {"model": model}


HF_SWIN = WeightConverter(
    name="hf-swin",
    source="hf",
    architectures=("swin", "swinv2"),
    rules=HF_SWIN_RULES,
    detect=_looks_like_hf_swin,
    spec_from_config=spec_from_hf_swin,
    config_names=("swin", "swinv2"),
    summary="transformers SwinModel / SwinForImageClassification, Swinv2Model / Swinv2ForImageClassification",
    verified_by="tests/test_swin.py",
)

CONVERTERS = (TIMM_SWIN, OFFICIAL_SWIN, HF_SWIN)
