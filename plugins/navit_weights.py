"""Weight converter: vit-pytorch's ``NaViT`` state dicts into vitzoo ``navit``.

Data only: renames, the q and kv projections concatenated into vitzoo's fused qkv, and one
tensor operation. vit-pytorch's attention computes ``softmax(q' . k')`` with
``q' = F.normalize(q) * sqrt(d) * gamma_q`` (scale 1); vitzoo's mhsa computes
``softmax(q'' . k'' / sqrt(d))`` with ``q'' = rmsnorm(q) * w_q``. With
``w = gamma * d ** 0.25`` for both queries and keys the logits are equal, so the qk-norm scales
are multiplied by ``head_dim ** 0.25`` on the way in (:class:`ScaleQkNorm`). The LayerNorms'
zero shifts (``beta`` buffers, never trained) have no vitzoo counterpart: vitzoo's
``layernorm-nobias`` has no shift at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vitzoo.weights import Concat, Rename, Reshape, TensorOp, Unused, WeightConverter


@dataclass(frozen=True)
class ScaleQkNorm(TensorOp):
    """vit-pytorch's per-head qk RMS-norm scale ``(heads, 1, d)`` -> vitzoo's: times ``d ** 0.25``
    (``d`` read from the tensor), folding vit-pytorch's logit scale 1 into the usual
    ``d ** -0.5``."""

    def apply(self, tensor: torch.Tensor, target_shape: tuple[int, ...]) -> torch.Tensor:
        return tensor * tensor.shape[-1] ** 0.25


_LAYER = r"transformer\.layers\.(\d+)\."


def _attention(source: str, kv: str, target: str) -> tuple[Rename | Concat, ...]:
    """One vit-pytorch ``Attention`` (``source`` regex, ``kv`` its to_kv template) -> vitzoo's
    mhsa at ``target``: [to_q; to_kv] is [q; k; v], the fused qkv."""
    return (
        Concat((source + r"to_q\.weight", kv), target + "qkv.weight"),
        Rename(
            source + r"(?P<norm>q_norm|k_norm)\.gamma",
            target + r"\g<norm>.weight",
            ops=(ScaleQkNorm(),),
        ),
        Rename(source + r"to_out\.0\.weight", target + "proj.weight"),
    )


VIT_PYTORCH_NAVIT_RULES = (
    Rename(r"to_patch_embedding\.0\.gamma", "patch.pre_norm.weight"),
    Rename(r"to_patch_embedding\.1\.(weight|bias)", r"patch.proj.\1"),
    Rename(r"to_patch_embedding\.2\.gamma", "patch.norm.weight"),
    Rename(r"pos_embed_height", "posenc.pos_embed_y"),
    Rename(r"pos_embed_width", "posenc.pos_embed_x"),
    *_attention(_LAYER + "0\\.", r"transformer.layers.\1.0.to_kv.weight", r"blocks.\1.attn."),
    *_attention(r"attn_pool\.", "attn_pool.to_kv.weight", "pool.attn."),
    Rename(_LAYER + r"0\.norm\.gamma", r"blocks.\1.norm1.weight"),
    Rename(_LAYER + r"1\.0\.gamma", r"blocks.\1.norm2.weight"),
    Rename(_LAYER + r"1\.1\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    Rename(_LAYER + r"1\.4\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    Rename(r"transformer\.norm\.gamma", "norm.weight"),
    Rename(r"attn_pool_queries", "pool.query", ops=(Reshape(),)),
    Rename(r"attn_pool\.norm\.gamma", "pool.norm.weight"),
    Rename(r"mlp_head\.0\.gamma", "fc_norm.weight"),
    Rename(r"mlp_head\.1\.weight", "head.fc.weight"),
    Unused(
        r"(?:.*\.)?beta",
        "the zero shift of vit-pytorch's LayerNorm: a constant buffer, never trained "
        "(vitzoo's layernorm-nobias has none)",
    ),
)


def _looks_like_vit_pytorch_navit(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return "to_patch_embedding.1.weight" in tensors and "attn_pool_queries" in tensors


VIT_PYTORCH_NAVIT = WeightConverter(
    name="vit-pytorch-navit",
    source="official",
    architectures=("navit",),
    rules=VIT_PYTORCH_NAVIT_RULES,
    detect=_looks_like_vit_pytorch_navit,
    summary="vit-pytorch NaViT state dicts (vit_pytorch.na_vit.NaViT, the reference code)",
    verified_by="tests/test_navit.py",
)

CONVERTERS = (VIT_PYTORCH_NAVIT,)
