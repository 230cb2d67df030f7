"""Weight converters for the CLIP and SigLIP image towers: timm, OpenCLIP / OpenAI, Hugging Face.

Data only. Where a source holds a whole image-text model (OpenCLIP files, HF ``CLIPModel`` /
``SiglipModel``), the text tower and the logit scale / bias are :class:`OtherTower` tensors:
left out, and the load says in one line that it took the vision tower.

* timm (``vit_*_clip_*``, ``vit_*_siglip_*``): timm's ViT layout (the ViT base's rules), whose
  CLIP conversion turns OpenAI's bias-free projection into ``head`` with a zero bias: an all-zero
  bias is left out where the model's head has none (the ``projection`` head), kept otherwise.
* OpenCLIP / OpenAI (``visual.conv1``, ``visual.class_embedding``, ``visual.ln_pre``,
  ``visual.transformer.resblocks.N.attn.in_proj_weight`` = [q; k; v], ``visual.proj`` stored
  (width, embed), i.e. transposed); OpenCLIP's SigLIP models wrap a timm tower
  (``visual.trunk.*``).
* Hugging Face ``CLIPVisionModel(WithProjection)`` / ``CLIPModel`` /
  ``CLIPForImageClassification`` and ``SiglipVisionModel`` / ``SiglipModel`` /
  ``SiglipForImageClassification``, the spec derived from ``config.json``. HF spells CLIP's
  ln_pre ``pre_layrnorm``; SigLIP's MAP head is an ``nn.MultiheadAttention`` whose packed
  ``in_proj`` splits into the probe's ``q`` and ``kv``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from vitzoo_plugins._vit_rules import TIMM_VIT_RULES

from vitzoo.errors import WeightsError
from vitzoo.weights import (
    Concat,
    Rename,
    Reshape,
    Split,
    Transpose,
    Unused,
    WeightConverter,
)
from vitzoo.weights.hf_config import hf_activation, hf_class_names
from vitzoo.weights.rules import OtherTower

# -- timm ----------------------------------------------------------------------------------------
#: timm adds a zero bias to OpenAI / OpenCLIP's projection: the same function without it.
ZERO_HEAD_BIAS = Rename(
    r"head\.bias",
    r"head.fc.bias",
    optional="the zero bias timm gives CLIP's projection (the projection head has none)",
    only_if_zero=True,
)


def _looks_like_timm_clip(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """timm's ViT layout with CLIP's pre-norm or SigLIP's attention pool (a plain timm ViT is
    the vit family's; where it is loaded into clip / siglip, this converter is the only timm one
    and strict accounting names what does not fit)."""
    return (
        "patch_embed.proj.weight" in tensors
        and "blocks.0.attn.qkv.weight" in tensors
        and ("norm_pre.weight" in tensors or "attn_pool.latent" in tensors)
    )


TIMM_CLIP = WeightConverter(
    name="timm-clip",
    source="timm",
    architectures=("clip", "siglip"),
    rules=(ZERO_HEAD_BIAS, *TIMM_VIT_RULES),
    detect=_looks_like_timm_clip,
    summary="timm vit_*_clip_* / vit_*_siglip_* (VisionTransformer with norm_pre / attn_pool)",
    verified_by="tests/test_weights_clip.py",
)

# -- OpenCLIP / OpenAI ---------------------------------------------------------------------------
#: An image-text checkpoint's other tensors: OpenAI / OpenCLIP's text transformer (unprefixed),
#: OpenCLIP's custom / HF text towers (``text.``), the logit scale and SigLIP's logit bias, and
#: the buffers and sizes OpenAI's JIT archives carry.
OPENCLIP_TEXT = (
    OtherTower(
        r"(?:token_embedding\.weight|positional_embedding|text_projection|ln_final\.(?:weight|bias)"
        r"|transformer\..*|text\..*|logit_scale|logit_bias|attn_mask"
        r"|input_resolution|context_length|vocab_size)"
    ),
)
_BLOCK = r"visual\.transformer\.resblocks\.(\d+)\."
OPENCLIP_RULES = (
    *OPENCLIP_TEXT,
    Rename(r"visual\.conv1\.weight", "patch.proj.weight"),
    Rename(r"visual\.class_embedding", "cls_token", ops=(Reshape(),)),
    Rename(r"visual\.positional_embedding", "posenc.pos_embed", ops=(Reshape(),)),
    Rename(r"visual\.ln_pre\.(weight|bias)", r"norm_pre.\1"),
    Rename(_BLOCK + r"ln_(1|2)\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    Rename(_BLOCK + r"attn\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    Rename(_BLOCK + r"attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    Rename(_BLOCK + r"mlp\.c_fc\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    Rename(_BLOCK + r"mlp\.c_proj\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    Rename(_BLOCK + r"ls_(1|2)\.gamma", r"blocks.\1.ls\2.gamma"),
    Rename(r"visual\.ln_post\.(weight|bias)", r"norm.\1"),
    # x @ proj with proj (width, embed): a Linear whose weight is proj.T
    Rename(r"visual\.proj", "head.fc.weight", ops=(Transpose(),)),
)


def _looks_like_openclip(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "visual.conv1.weight" in tensors and "visual.class_embedding" in tensors


OPENCLIP = WeightConverter(
    name="openclip",
    source="official",
    architectures=("clip",),
    rules=OPENCLIP_RULES,
    detect=_looks_like_openclip,
    summary="OpenCLIP / OpenAI CLIP state dicts (visual.*; the text tower is left out)",
    verified_by="tests/test_weights_clip.py",
)


def _prefixed(rules: tuple[Rename, ...], prefix: str) -> tuple[Rename, ...]:
    """The same renames for keys under ``prefix`` (a regex), e.g. a tower nested in a model."""
    return tuple(replace(rule, pattern=prefix + rule.pattern) for rule in rules)


def _looks_like_openclip_timm(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "visual.trunk.patch_embed.proj.weight" in tensors


OPENCLIP_SIGLIP = WeightConverter(
    name="openclip-siglip",
    source="official",
    architectures=("siglip",),
    rules=(*OPENCLIP_TEXT, *_prefixed(TIMM_VIT_RULES, r"visual\.trunk\.")),
    detect=_looks_like_openclip_timm,
    summary="OpenCLIP SigLIP state dicts (a timm tower under visual.trunk; text tower left out)",
    verified_by="tests/test_weights_clip.py",
)

# -- Hugging Face --------------------------------------------------------------------------------
_V = r"(?:vision_model\.)?"
#: Group 1: the optional ``vision_model.`` prefix; group 2: the layer.
_L = r"(vision_model\.)?encoder\.layers\.(\d+)\."
#: The encoder layer both families share (CLIPEncoderLayer / SiglipEncoderLayer).
HF_ENCODER = (
    Concat(
        (
            _L + r"self_attn\.q_proj\.(weight|bias)",
            r"\1encoder.layers.\2.self_attn.k_proj.\3",
            r"\1encoder.layers.\2.self_attn.v_proj.\3",
        ),
        r"blocks.\2.attn.qkv.\3",
    ),
    Rename(_L + r"self_attn\.out_proj\.(weight|bias)", r"blocks.\2.attn.proj.\3"),
    Rename(_L + r"layer_norm(1|2)\.(weight|bias)", r"blocks.\2.norm\3.\4"),
    Rename(_L + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\2.mlp.\3.\4"),
)
HF_TEXT = (OtherTower(r"(?:text_model\..*|text_projection\.weight|logit_scale|logit_bias)"),)
HF_POSITION_IDS = Unused(_V + r"embeddings\.position_ids", "index buffer vitzoo recomputes")

HF_CLIP_RULES = (
    *HF_TEXT,
    HF_POSITION_IDS,
    Rename(_V + r"embeddings\.class_embedding", "cls_token", ops=(Reshape(),)),
    Rename(_V + r"embeddings\.patch_embedding\.weight", "patch.proj.weight"),
    Rename(_V + r"embeddings\.position_embedding\.weight", "posenc.pos_embed", ops=(Reshape(),)),
    Rename(_V + r"pre_layrnorm\.(weight|bias)", r"norm_pre.\1"),
    *HF_ENCODER,
    Rename(
        _V + r"post_layernorm\.(weight|bias)",
        r"norm.\1",
        optional="CLIPForImageClassification averages the patch tokens before post_layernorm",
    ),
    Rename(r"visual_projection\.weight", "head.fc.weight"),
    Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
)

_MAP_UNUSED = "SiglipForImageClassification classifies the mean token; its MAP head is not used"
HF_SIGLIP_RULES = (
    *HF_TEXT,
    HF_POSITION_IDS,
    Rename(_V + r"embeddings\.patch_embedding\.(weight|bias)", r"patch.proj.\1"),
    Rename(_V + r"embeddings\.position_embedding\.weight", "posenc.pos_embed", ops=(Reshape(),)),
    *HF_ENCODER,
    Rename(_V + r"post_layernorm\.(weight|bias)", r"norm.\1"),
    Rename(_V + r"head\.probe", "pool.latent", optional=_MAP_UNUSED),
    # nn.MultiheadAttention packs [q; k; v]: q projects the probe, k and v the tokens
    Split(
        _V + r"head\.attention\.in_proj_(weight|bias)",
        (r"pool.q.\1", r"pool.kv.\1"),
        optional=_MAP_UNUSED,
    ),
    Rename(_V + r"head\.attention\.out_proj\.(weight|bias)", r"pool.proj.\1", optional=_MAP_UNUSED),
    Rename(_V + r"head\.layernorm\.(weight|bias)", r"pool.norm.\1", optional=_MAP_UNUSED),
    Rename(_V + r"head\.mlp\.(fc1|fc2)\.(weight|bias)", r"pool.mlp.\1.\2", optional=_MAP_UNUSED),
    Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
)

#: transformers' defaults, for fields a config.json saved with ``use_diff`` leaves out.
CLIP_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 512,
}
SIGLIP_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": True,
}


def _vision(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The vision tower's settings: ``vision_config`` of a two-tower config, else the config."""
    nested = config.get("vision_config")
    return {**defaults, **(nested if isinstance(nested, Mapping) else config)}


def _trunk(vision: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """The ViT fields both families read the same way from a vision config."""
    width, hidden = vision["hidden_size"], vision["intermediate_size"]
    size, patch = vision["image_size"], vision["patch_size"]
    eps = float(vision["layer_norm_eps"])
    mlp = {"ratio": float(hidden // width)} if hidden % width == 0 else {"hidden_dim": hidden}
    return {
        "type": model_type,
        "image_size": size,
        "in_chans": vision["num_channels"],
        "dim": width,
        "depth": vision["num_hidden_layers"],
        "num_heads": vision["num_attention_heads"],
        # HF's Conv2d(padding="valid") drops a remainder (So400m/14 at 384 px)
        "patch": {"type": "linear", "patch_size": patch, "crop_remainder": bool(size % patch)},
        "mlp": {"type": "mlp", **mlp, "activation": hf_activation(vision["hidden_act"])},
        "block": {"type": "pre-norm", "norm_eps": eps},
        "norm_eps": eps,
    }


#: CLIP's and SigLIP's ``interpolate_pos_encoding``: bicubic to the size, no antialias, in the
#: model's own dtype (the presets resample as timm does).
HF_POSITIONS = {"type": "learned", "antialias": False, "resample_in_float32": False}


def _architecture(config: Mapping[str, Any], family: str, known: tuple[str, ...]) -> str:
    arch = str((config.get("architectures") or [known[0]])[0])
    if arch not in known:
        raise WeightsError(
            f"config.json: {arch} has no image tower vitzoo builds as {family!r}; "
            f"supported: {', '.join(known)}"
        )
    return arch


CLIP_ARCHITECTURES = (
    "CLIPModel",
    "CLIPVisionModelWithProjection",
    "CLIPVisionModel",
    "CLIPForImageClassification",
)


def spec_from_hf_clip(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF CLIPConfig / CLIPVisionConfig -> a vitzoo ``clip`` spec with the same function: the
    projection is the head (CLIPModel, *WithProjection), none for CLIPVisionModel (its output is
    the pooled, post-normed class token), a classifier over the mean of the un-normed patch
    tokens for CLIPForImageClassification."""
    arch = _architecture(config, "clip", CLIP_ARCHITECTURES)
    vision = _vision(config, CLIP_VISION_DEFAULTS)
    model = _trunk(vision, "clip")
    model["patch"]["bias"] = False
    model["norm_pre"] = True
    model["posenc"] = HF_POSITIONS
    if arch == "CLIPForImageClassification":
        labels = hf_class_names(config)
        num = len(labels) if labels else int(config.get("num_labels", 2))
        model |= {"num_classes": num, "head": {"type": "linear"}, "pool": {"type": "mean"}}
        model["final_norm"] = False
    elif arch == "CLIPVisionModel":
        model["num_classes"] = 0
    else:
        dim = config.get("projection_dim") if "vision_config" in config else None
        model["num_classes"] = int(dim or vision["projection_dim"])
        model["head"] = {"type": "projection"}
    return {"model": model}


SIGLIP_ARCHITECTURES = ("SiglipModel", "SiglipVisionModel", "SiglipForImageClassification")


def spec_from_hf_siglip(config: Mapping[str, Any]) -> dict[str, Any]:
    """HF SiglipConfig / SiglipVisionConfig -> a vitzoo ``siglip`` spec with the same function:
    the MAP head's output is the embedding (no classifier); SiglipForImageClassification
    classifies the mean of all tokens (its MAP head is carried but unused)."""
    arch = _architecture(config, "siglip", SIGLIP_ARCHITECTURES)
    vision = _vision(config, SIGLIP_VISION_DEFAULTS)
    model = _trunk(vision, "siglip")
    model |= {"class_token": False, "num_classes": 0, "posenc": HF_POSITIONS}
    if arch == "SiglipForImageClassification" or not vision["vision_use_head"]:
        model["pool"] = {"type": "mean"}
    else:
        model["pool"] = {"type": "map", "norm_eps": model["norm_eps"]}
    if arch == "SiglipForImageClassification":
        labels = hf_class_names(config)
        model["num_classes"] = len(labels) if labels else int(config.get("num_labels", 2))
    return {"model": model}


HF_CLIP = WeightConverter(
    name="hf-clip",
    source="hf",
    architectures=("clip",),
    rules=HF_CLIP_RULES,
    spec_from_config=spec_from_hf_clip,
    config_names=("clip", "clip_vision_model"),
    summary="transformers CLIPVisionModel(WithProjection) / CLIPModel / CLIPForImageClassification",
    verified_by="tests/test_weights_clip.py",
)

HF_SIGLIP = WeightConverter(
    name="hf-siglip",
    source="hf",
    architectures=("siglip",),
    rules=HF_SIGLIP_RULES,
    spec_from_config=spec_from_hf_siglip,
    config_names=("siglip", "siglip_vision_model"),
    summary="transformers SiglipVisionModel / SiglipModel / SiglipForImageClassification",
    verified_by="tests/test_weights_clip.py",
)

CONVERTERS = (TIMM_CLIP, OPENCLIP, OPENCLIP_SIGLIP, HF_CLIP, HF_SIGLIP)
