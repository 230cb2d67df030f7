"""Weight converters for DINOv2 (``dinov2``): timm, the official hub release, Hugging Face.

Data only. The vitzoo layout is timm's (the presets' aliases are timm names), so timm's state
dicts load through the ViT base's rules. The other two differ in three ways:

* **names**: the official hub checkpoints (``torch.hub.load("facebookresearch/dinov2", ...)``,
  ``dinov2_vits14_pretrain.pth`` ...) name the ViT-g SwiGLU ``mlp.w12`` / ``mlp.w3`` (one
  packed input projection, like timm's ``fc1``), and training checkpoints saved with
  ``block_chunks`` nest blocks as ``blocks.<chunk>.<index>`` (the index counts from 0 over the
  whole model, so the chunk is dropped). Hugging Face keeps q, k and v apart, names LayerScale
  ``layer_scale1.lambda1`` and the packed SwiGLU ``weights_in`` / ``weights_out`` in its files
  (transformers >= 5 renames them in memory: ``q_proj``, ``gate_proj`` + ``up_proj`` ...;
  both are read);
* **the class token's position with registers**: the official and Hugging Face models keep a
  table row for the class token and add it; timm (``no_embed_class``) folds that row into the
  class token and keeps a patch-only table. The converters fold the same way (:class:`Sum`),
  so the function is unchanged: cls + pos[0] is added once, ahead of time;
* **the iBOT mask token** (``mask_token``) replaces masked patches in pre-training only and is
  not on the inference path: declared unused, never dropped silently.

Hugging Face's ``Dinov2ForImageClassification`` / ``Dinov2WithRegistersForImageClassification``
and the hub's 1-layer linear classifiers (``dinov2_vit*14[_reg]_lc(layers=1)``: the backbone
under ``backbone.``, the Linear as ``linear_head``) classify [class token, mean of the patch
tokens] (registers excluded): their spec takes ``pool: {type: cls-mean}`` with a 2 D-wide
linear head. The spec derived from ``config.json``
also carries Hugging Face's way of resampling the table at other input sizes (bicubic to the
target size; antialiased with registers), which differs from timm's and the hub's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo_plugins._vit_rules import TIMM_VIT_RULES

from vitzoo.weights import (
    Concat,
    KeepInit,
    Rename,
    Slice,
    Sum,
    Unused,
    WeightConverter,
)
from vitzoo.weights.hf_config import hf_activation, hf_num_classes

MASK_TOKEN = (
    "the iBOT mask token replaces masked patches in pre-training; it is not on the inference path"
)
TEST = "tests/test_weights_dinov2.py"


def _has_class_row(tensors: Mapping[str, Any]) -> bool:
    """The position table has one row more than a square patch grid (the class token's)."""
    table = tensors.get("pos_embed")
    if table is None or table.ndim != 3:
        return False
    rows = int(table.shape[1])
    return round((rows - 1) ** 0.5) ** 2 == rows - 1 and round(rows**0.5) ** 2 != rows


def _looks_like_timm_dinov2(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """timm's layout (no mask token) with LayerScale, and registers or a class row (DeiT III,
    also LayerScale, has neither)."""
    return (
        "patch_embed.proj.weight" in tensors
        and "blocks.0.ls1.gamma" in tensors
        and "mask_token" not in tensors
        and ("reg_token" in tensors or _has_class_row(tensors))
    )


TIMM_DINOV2 = WeightConverter(
    name="timm-dinov2",
    source="timm",
    architectures=("dinov2",),
    rules=TIMM_VIT_RULES,
    detect=_looks_like_timm_dinov2,
    summary="timm vit_*_patch14_dinov2 / vit_*_patch14_reg4_dinov2 state dicts",
    verified_by=TEST,
)

# -- the official release (facebookresearch/dinov2) -----------------------------------------
#: The hub's linear classifiers (``dinov2_vit*14_lc``) wrap the backbone as ``backbone.``.
_HUB = r"(?:backbone\.)?"
#: A block of the official model: ``blocks.N.`` (hub) or ``blocks.<chunk>.N.`` (block_chunks).
_BLOCK = _HUB + r"blocks\.(?:\d+\.)?(\d+)\."

OFFICIAL_COMMON = (
    Rename(_HUB + r"patch_embed\.proj\.(weight|bias)", r"patch.proj.\1"),
    Rename(
        _BLOCK + r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
        r"blocks.\1.\2.\3",
    ),
    Rename(_BLOCK + r"mlp\.w12\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    Rename(_BLOCK + r"mlp\.w3\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    Rename(_BLOCK + r"(ls1|ls2)\.gamma", r"blocks.\1.\2.gamma"),
    Rename(_HUB + r"norm\.(weight|bias)", r"norm.\1"),
    # dinov2_vit*14_lc(layers=1): a Linear on [class token, mean of the patch tokens] -- the
    # cls-mean pooling (layers=4 reads four blocks' class tokens: no vitzoo pooling, so its
    # 5 D-wide head is reported as a shape mismatch)
    Rename(r"linear_head\.(weight|bias)", r"head.fc.\1"),
    Unused(_HUB + r"mask_token", MASK_TOKEN),
    KeepInit(r"head\..*", "the hub backbones have no classifier"),
)


def _looks_official(tensors: Mapping[str, Any], registers: bool) -> bool:
    prefix = "backbone." if "backbone.mask_token" in tensors else ""
    return (
        prefix + "mask_token" in tensors
        and prefix + "patch_embed.proj.weight" in tensors
        and (prefix + "register_tokens" in tensors) == registers
    )


OFFICIAL_DINOV2 = WeightConverter(
    name="official-dinov2",
    source="official",
    architectures=("dinov2",),
    rules=(
        Rename(_HUB + r"cls_token", r"cls_token"),
        Rename(_HUB + r"pos_embed", r"posenc.pos_embed"),
        *OFFICIAL_COMMON,
    ),
    detect=lambda tensors, config: _looks_official(tensors, registers=False),
    summary="facebookresearch/dinov2 hub checkpoints dinov2_vit{s,b,l,g}14 and their 1-layer "
    "linear classifiers (_lc; pool: cls-mean); mask token unused",
    verified_by=TEST,
)

#: The class token's table row, folded into the class token (timm's no_embed_class layout).
FOLD_CLASS_ROW = (Slice(1, 0, 1),)
PATCH_ROWS = (Slice(1, 1),)

OFFICIAL_DINOV2_REG = WeightConverter(
    name="official-dinov2-reg",
    source="official",
    architectures=("dinov2",),
    rules=(
        Sum(
            (r"((?:backbone\.)?)cls_token", r"\1pos_embed"),
            "cls_token",
            ((), FOLD_CLASS_ROW),
            shared=(1,),
        ),
        Rename(_HUB + r"pos_embed", r"posenc.pos_embed", PATCH_ROWS),
        Rename(_HUB + r"register_tokens", r"reg_token"),
        *OFFICIAL_COMMON,
    ),
    detect=lambda tensors, config: _looks_official(tensors, registers=True),
    summary="facebookresearch/dinov2 hub checkpoints dinov2_vit{s,b,l,g}14_reg and their 1-layer "
    "linear classifiers (class position folded into the class token, mask token unused)",
    verified_by=TEST,
)

# -- Hugging Face (Dinov2*, Dinov2WithRegisters*) -------------------------------------------
#: Group 1: the model prefix of a *ForImageClassification (absent in a bare *Model).
_PREFIX = r"((?:dinov2|dinov2_with_registers)\.)?"
_BASE = r"(?:dinov2\.|dinov2_with_registers\.)?"
_LAYER = _PREFIX + r"encoder\.layer\.(\d+)\."


def _joined(first: str, *others: str, target: str) -> Concat:
    """Sibling tensors of one layer (``first``, then ``others``) concatenated into ``target``."""
    siblings = (rf"\1encoder.layer.\2.{name}.\3" for name in others)
    return Concat((_LAYER + first + r"\.(weight|bias)", *siblings), rf"blocks.\2.{target}.\3")


def _renamed(source: str, target: str) -> Rename:
    return Rename(_LAYER + source + r"\.(weight|bias)", rf"blocks.\2.{target}.\3")


HF_LAYERS = (
    # the files' layout (what save_pretrained writes and the hub holds)
    _joined(
        r"attention\.attention\.query",
        "attention.attention.key",
        "attention.attention.value",
        target="attn.qkv",
    ),
    _renamed(r"attention\.output\.dense", "attn.proj"),
    _renamed(r"mlp\.weights_in", "mlp.fc1"),
    _renamed(r"mlp\.weights_out", "mlp.fc2"),
    # transformers >= 5 in memory
    _joined(r"attention\.q_proj", "attention.k_proj", "attention.v_proj", target="attn.qkv"),
    _renamed(r"attention\.o_proj", "attn.proj"),
    _joined(r"mlp\.gate_proj", "mlp.up_proj", target="mlp.fc1"),
    _renamed(r"mlp\.down_proj", "mlp.fc2"),
    # both
    Rename(_LAYER + r"(norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)", r"blocks.\2.\3.\4"),
    Rename(_LAYER + r"layer_scale(1|2)\.lambda1", r"blocks.\2.ls\3.gamma"),
    Rename(_BASE + r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch.proj.\1"),
    Rename(_BASE + r"layernorm\.(weight|bias)", r"norm.\1"),
    Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
    Unused(_BASE + r"embeddings\.mask_token", MASK_TOKEN),
    KeepInit(r"head\..*", "a feature checkpoint (*Model) has no classifier"),
)

HF_DINOV2_RULES = (
    Rename(_BASE + r"embeddings\.cls_token", r"cls_token"),
    Rename(_BASE + r"embeddings\.position_embeddings", r"posenc.pos_embed"),
    *HF_LAYERS,
)

_EMBEDDINGS = r"((?:dinov2_with_registers\.)?embeddings\.)"
HF_DINOV2_REG_RULES = (
    Sum(
        (_EMBEDDINGS + r"cls_token", r"\1position_embeddings"),
        "cls_token",
        ((), FOLD_CLASS_ROW),
        shared=(1,),
    ),
    Rename(_BASE + r"embeddings\.position_embeddings", r"posenc.pos_embed", PATCH_ROWS),
    Rename(_BASE + r"embeddings\.register_tokens", r"reg_token"),
    *HF_LAYERS,
)


def _swiglu_hidden(dim: int, ratio: float) -> int:
    """Hugging Face's (and the official) SwiGLU width: 2/3 of the MLP's, rounded up to 8."""
    return (int(int(dim * ratio) * 2 / 3) + 7) // 8 * 8


def spec_from_hf_dinov2(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF Dinov2Config / Dinov2WithRegistersConfig -> a vitzoo ``dinov2`` spec with the same
    function (resampling included)."""
    dim = int(config["hidden_size"])
    ratio = float(config.get("mlp_ratio", 4))
    eps = float(config.get("layer_norm_eps", 1e-6))
    registers = int(config.get("num_register_tokens", 0))
    if config.get("model_type") != "dinov2_with_registers":
        registers = 0
    if config.get("use_swiglu_ffn"):
        mlp: dict[str, Any] = {"type": "swiglu", "hidden_dim": _swiglu_hidden(dim, ratio)}
    else:
        hidden = int(dim * ratio)
        width = {"ratio": float(hidden // dim)} if hidden % dim == 0 else {"hidden_dim": hidden}
        mlp = {
            "type": "mlp",
            **width,
            "activation": hf_activation(config.get("hidden_act", "gelu")),
        }
    classes = hf_num_classes(config)
    model: dict[str, Any] = {
        "type": "dinov2",
        "image_size": config.get("image_size", 224),
        "in_chans": config.get("num_channels", 3),
        "num_classes": classes,
        "dim": dim,
        "depth": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "patch": {"type": "linear", "patch_size": config.get("patch_size", 14)},
        # Hugging Face resamples to the target size, antialiased only with registers
        "posenc": {
            "type": "learned",
            "include_prefix": not registers,
            "antialias": bool(registers),
        },
        "attention": {"type": "mhsa", "qkv_bias": bool(config.get("qkv_bias", True))},
        "mlp": mlp,
        "block": {
            "type": "pre-norm",
            "norm_eps": eps,
            "layer_scale": float(config.get("layerscale_value", 1.0)),
        },
        "register_tokens": registers,
        "norm_eps": eps,
        # *ForImageClassification: [class token, mean of the patch tokens]; *Model: the class
        # token (its pooler_output)
        "pool": {"type": "cls-mean" if classes else "cls"},
    }
    return {"model": model}


HF_DINOV2 = WeightConverter(
    name="hf-dinov2",
    source="hf",
    architectures=("dinov2",),
    rules=HF_DINOV2_RULES,
    spec_from_config=spec_from_hf_dinov2,
    config_names=("dinov2",),
    summary="transformers Dinov2Model / Dinov2ForImageClassification (class token + patch mean)",
    verified_by=TEST,
)

HF_DINOV2_REG = WeightConverter(
    name="hf-dinov2-reg",
    source="hf",
    architectures=("dinov2",),
    rules=HF_DINOV2_REG_RULES,
    spec_from_config=spec_from_hf_dinov2,
    config_names=("dinov2_with_registers",),
    summary="transformers Dinov2WithRegistersModel / ...ForImageClassification (class position "
    "folded into the class token, registers out of the mean)",
    verified_by=TEST,
)

CONVERTERS = (TIMM_DINOV2, OFFICIAL_DINOV2, OFFICIAL_DINOV2_REG, HF_DINOV2, HF_DINOV2_REG)
