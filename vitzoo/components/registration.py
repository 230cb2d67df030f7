"""The core plugin: registers the default components through the same hooks as any plugin."""

from __future__ import annotations

from typing import Any

from vitzoo.components import attention, block, heads, mlp, patchify, pooling, posenc
from vitzoo.hookspecs import hookimpl


@hookimpl
def register_patchifiers(register: Any) -> None:
    register("linear", patchify.build_linear_patch, patchify.LinearPatchConfig, tags={"image"})


@hookimpl
def register_positional_encodings(register: Any) -> None:
    register("learned", posenc.build_learned, posenc.LearnedPosConfig)
    register("sincos", posenc.build_sincos, posenc.SinCosConfig)
    register("none", posenc.build_none, posenc.NoPosConfig)


@hookimpl
def register_attention(register: Any) -> None:
    register("mhsa", attention.build_mhsa, attention.MhsaConfig, tags={"mask", "sdpa"})


@hookimpl
def register_mlps(register: Any) -> None:
    register("mlp", mlp.build_mlp, mlp.MlpConfig)


@hookimpl
def register_blocks(register: Any) -> None:
    register("pre-norm", block.build_pre_norm_block, block.PreNormBlockConfig, tags={"mask"})


@hookimpl
def register_pooling(register: Any) -> None:
    register("cls", pooling.build_cls_pool, pooling.ClsPoolConfig)
    register("mean", pooling.build_mean_pool, pooling.MeanPoolConfig)
    register(
        "cls-dist", pooling.build_cls_dist_pool, pooling.ClsDistPoolConfig, tags={"distillation"}
    )


@hookimpl
def register_heads(register: Any) -> None:
    register("linear", heads.build_linear_head, heads.LinearHeadConfig)
    register(
        "distillation",
        heads.build_distillation_head,
        heads.DistillationHeadConfig,
        tags={"distillation"},
    )
