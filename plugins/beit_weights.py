"""Weight converters for BEiT / BEiT v2: timm's ``Beit`` and Hugging Face's ``Beit*`` layouts.

Data only. What needs more than a rename:

* the relative-position table ((2h-1)(2w-1) + 3, heads) is split: its grid rows fill vitzoo's
  ``relative_position_bias_table``, its last three (class -> patch, patch -> class, class ->
  class) ``prefix_bias`` -- kept apart in vitzoo so the grid part resamples like any offset
  table;
* Hugging Face keeps q, k, v as three Linears (the key without a bias): the weights are
  concatenated into ``qkv``, the query and value biases are ``q_bias`` / ``v_bias``.

The spec derived from a Hugging Face ``config.json`` carries every setting that changes the
function (LayerNorm eps 1e-12, mean pooling or the class token, LayerScale on or off, absolute
positions, the MLP width and activation). The official microsoft/unilm checkpoints have timm's
names plus the derived ``relative_position_index`` buffers, which are declared unused. BEiT's
pre-training checkpoints with one table shared by all blocks are refused with a plain error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo.errors import WeightsError
from vitzoo.weights import Concat, KeepInit, Rename, Split, Unused, WeightConverter
from vitzoo.weights.hf_config import hf_activation, hf_num_classes

_TABLE = r"attn.relative_position.relative_position_bias_table"
_PREFIX = r"attn.relative_position.prefix_bias"


def _split_table(pattern: str, block: str) -> Split:
    """BEiT's table (grid rows, then the three class-token rows) -> vitzoo's two tensors."""
    return Split(pattern, (f"blocks.{block}.{_TABLE}", f"blocks.{block}.{_PREFIX}"), dim=0)


TIMM_BEIT_RULES = (
    Rename(r"patch_embed\.proj\.(weight|bias)", r"patch.proj.\1"),
    Rename(r"cls_token", r"cls_token"),
    Rename(r"pos_embed", r"posenc.pos_embed"),
    Rename(
        r"blocks\.(\d+)\.(norm1|norm2|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
        r"blocks.\1.\2.\3",
    ),
    Rename(r"blocks\.(\d+)\.attn\.qkv\.weight", r"blocks.\1.attn.qkv.weight"),
    Rename(r"blocks\.(\d+)\.attn\.(q_bias|v_bias)", r"blocks.\1.attn.\2"),
    _split_table(r"blocks\.(\d+)\.attn\.relative_position_bias_table", r"\1"),
    Rename(r"blocks\.(\d+)\.gamma_(1|2)", r"blocks.\1.ls\2.gamma"),
    Unused(
        r"blocks\.(\d+)\.attn\.relative_position_index",
        "derived index buffer (official microsoft/unilm checkpoints); vitzoo computes it",
    ),
    Rename(r"(norm|fc_norm)\.(weight|bias)", r"\1.\2"),
    Rename(r"head\.(weight|bias)", r"head.fc.\1"),
)


def _looks_like_timm_beit(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "patch_embed.proj.weight" in tensors and any(
        k.endswith("attn.relative_position_bias_table") for k in tensors
    )


TIMM_BEIT = WeightConverter(
    name="timm-beit",
    source="timm",
    architectures=("beit",),
    rules=TIMM_BEIT_RULES,
    detect=_looks_like_timm_beit,
    config_names=("beit_", "beitv2_"),
    summary="timm Beit state dicts (BEiT, BEiT v2; official microsoft/unilm layout too)",
    verified_by="tests/test_beit.py",
)

# Group 1 is the model prefix ("beit." in *ForImageClassification, absent in a bare BeitModel);
# files keep the first layout, transformers >= 5 names the same tensors the second way in memory.
_HF_LAYER = r"((?:beit\.)?)encoder\.layer\.(\d+)\."
_HF_ATTN = _HF_LAYER + r"attention\.attention\."
_HF_LAYER_V5 = r"((?:beit\.)?)layers\.(\d+)\."
_HF_BASE = r"(?:beit\.)?"

HF_BEIT_RULES = (
    Concat(
        (
            _HF_ATTN + r"query\.weight",
            r"\1encoder.layer.\2.attention.attention.key.weight",
            r"\1encoder.layer.\2.attention.attention.value.weight",
        ),
        r"blocks.\2.attn.qkv.weight",
    ),
    Rename(_HF_ATTN + r"query\.bias", r"blocks.\2.attn.q_bias"),
    Rename(_HF_ATTN + r"value\.bias", r"blocks.\2.attn.v_bias"),
    _split_table(_HF_ATTN + r"relative_position_bias\.relative_position_bias_table", r"\2"),
    Rename(_HF_LAYER + r"attention\.output\.dense\.(weight|bias)", r"blocks.\2.attn.proj.\3"),
    Rename(_HF_LAYER + r"intermediate\.dense\.(weight|bias)", r"blocks.\2.mlp.fc1.\3"),
    Rename(_HF_LAYER + r"output\.dense\.(weight|bias)", r"blocks.\2.mlp.fc2.\3"),
    Concat(
        (
            _HF_LAYER_V5 + r"attention\.q_proj\.weight",
            r"\1layers.\2.attention.k_proj.weight",
            r"\1layers.\2.attention.v_proj.weight",
        ),
        r"blocks.\2.attn.qkv.weight",
    ),
    Rename(_HF_LAYER_V5 + r"attention\.q_proj\.bias", r"blocks.\2.attn.q_bias"),
    Rename(_HF_LAYER_V5 + r"attention\.v_proj\.bias", r"blocks.\2.attn.v_bias"),
    Rename(_HF_LAYER_V5 + r"attention\.o_proj\.(weight|bias)", r"blocks.\2.attn.proj.\3"),
    _split_table(_HF_LAYER_V5 + r"relative_position_bias\.relative_position_bias_table", r"\2"),
    Rename(_HF_LAYER_V5 + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\2.mlp.\3.\4"),
    *(
        Rename(layer + rf"layernorm_{theirs}\.(weight|bias)", rf"blocks.\2.{ours}.\3")
        for layer in (_HF_LAYER, _HF_LAYER_V5)
        for theirs, ours in (("before", "norm1"), ("after", "norm2"))
    ),
    *(
        Rename(layer + r"lambda_(1|2)", r"blocks.\2.ls\3.gamma")
        for layer in (_HF_LAYER, _HF_LAYER_V5)
    ),
    Rename(_HF_BASE + r"embeddings\.cls_token", r"cls_token"),
    Rename(_HF_BASE + r"embeddings\.position_embeddings", r"posenc.pos_embed"),
    Rename(_HF_BASE + r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch.proj.\1"),
    Unused(
        _HF_BASE + r"embeddings\.mask_token",
        "the masked-image-modelling mask token is not on the classification path",
    ),
    Rename(_HF_BASE + r"layernorm\.(weight|bias)", r"norm.\1"),
    Rename(_HF_BASE + r"pooler\.layernorm\.(weight|bias)", r"fc_norm.\1"),
    Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
    KeepInit(r"head\..*", "a feature checkpoint (BeitModel) has no classifier"),
)


def _mlp_width(dim: int, hidden: int) -> dict[str, Any]:
    """``ratio`` where the width is a whole multiple of ``dim`` (as presets say it), else exact."""
    return {"ratio": float(hidden // dim)} if hidden % dim == 0 else {"hidden_dim": hidden}


def _refuse_unsupported(config: Mapping[str, Any]) -> None:
    if config.get("use_shared_relative_position_bias"):
        raise WeightsError(
            "config.json: use_shared_relative_position_bias=true (BEiT's pre-training layout, one "
            "table for all blocks) is not supported; load a fine-tuned checkpoint, whose blocks "
            "each have their own table"
        )
    if config.get("use_relative_position_bias") is False:
        raise WeightsError(
            "config.json: use_relative_position_bias=false gives a BEiT without relative position "
            "bias, which vitzoo's beit does not build"
        )


def spec_from_hf_beit(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF BeitConfig -> a vitzoo ``beit`` spec with the same function."""
    _refuse_unsupported(config)
    eps = float(config.get("layer_norm_eps", 1e-12))
    scale = float(config.get("layer_scale_init_value", 0.1))
    mean = bool(config.get("use_mean_pooling", True))
    dim = config["hidden_size"]
    model: dict[str, Any] = {
        "type": "beit",
        "image_size": config.get("image_size", 224),
        "in_chans": config.get("num_channels", 3),
        "num_classes": hf_num_classes(config),
        "dim": dim,
        "depth": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "patch": {"type": "linear", "patch_size": config.get("patch_size", 16)},
        "posenc": {"type": "learned" if config.get("use_absolute_position_embeddings") else "none"},
        "attention": {"type": "rel-pos", "key_bias": False},
        "mlp": {
            "type": "mlp",
            **_mlp_width(dim, config["intermediate_size"]),
            "activation": hf_activation(config.get("hidden_act", "gelu")),
        },
        # HF multiplies by 1.0 when layer_scale_init_value <= 0: no LayerScale parameters
        "block": {"type": "pre-norm", "norm_eps": eps, "layer_scale": scale if scale > 0 else None},
        "pool": {"type": "mean" if mean else "cls"},
        "fc_norm": mean,
        "final_norm": not mean,
        "norm_eps": eps,
    }
    return {"model": model}


HF_BEIT = WeightConverter(
    name="hf-beit",
    source="hf",
    architectures=("beit",),
    rules=HF_BEIT_RULES,
    spec_from_config=spec_from_hf_beit,
    config_names=("beit",),
    summary="transformers BeitModel / BeitForImageClassification (BEiT, BEiT v2)",
    verified_by="tests/test_beit_hf.py",
)

CONVERTERS = (TIMM_BEIT, HF_BEIT)
