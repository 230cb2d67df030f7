"""The core plugin: registers the default components through the same hooks as any plugin.

It also registers the ``supervised`` objective, the trainer's default, so that training a
classifier never depends on a plugin being installed or enabled. It sits above the component
library and the objectives (it imports both), not inside either: :mod:`vitzoo.plugins` loads it
by name (``CORE_MODULE``), first and strictly, the way it loads every plugin by entry point.
"""

from __future__ import annotations

from typing import Any

from vitzoo.components import (
    attention,
    attention_pool,
    block,
    class_attention,
    conv,
    factorized_posenc,
    flat_patch,
    heads,
    mlp,
    patchify,
    pooling,
    posenc,
    query_pool,
    rope,
    spatial_attention,
    windows,
)
from vitzoo.hookspecs import hookimpl
from vitzoo.objectives.supervised import SupervisedConfig, SupervisedObjective
from vitzoo.registration_examples import grid_only_example


@hookimpl
def register_patchifiers(register: Any) -> None:
    register("linear", patchify.build_linear_patch, patchify.LinearPatchConfig, tags={"image"})
    # Native-resolution models' patch embedding (NaViT, SigLIP 2 NaFlex): a Linear over
    # flattened patches, with vit-pytorch's norms before / after.
    register(
        "flat-linear",
        flat_patch.build_flat_linear_patch,
        flat_patch.FlatLinearPatchConfig,
        tags={"image"},
        example={
            "config": {
                "patch_size": 8,
                "order": "chw",
                "pre_norm": "layernorm-nobias",
                "norm": "layernorm-nobias",
            }
        },
    )


@hookimpl
def register_positional_encodings(register: Any) -> None:
    register("learned", posenc.build_learned, posenc.LearnedPosConfig)
    register("sincos", posenc.build_sincos, posenc.SinCosConfig)
    register("none", posenc.build_none, posenc.NoPosConfig)
    register(
        "factorized",
        factorized_posenc.build_factorized,
        factorized_posenc.FactorizedPosConfig,
        tags={"image"},
    )
    register("peg", conv.build_peg, conv.PegConfig, tags={"image"}, needs={"grid-2d", "fixed-grid"})


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "mhsa",
        attention.build_mhsa,
        attention.MhsaConfig,
        tags={"mask", "sdpa"},
        offers={"token-mask", "block-mask"},
    )
    # Attention over the 2D patch grid, shared by the hierarchical families (Twins, MaxViT, CvT,
    # ...); it reads the grid from ctx.grid, so it also slots into a flat ViT.
    register(
        "window",
        windows.build_window_attention,
        windows.WindowAttentionConfig,
        tags={"image", "sdpa"},
        needs={"grid-2d", "fixed-grid", "no-prefix-tokens"},
        example=grid_only_example(window_size=2, mode="block"),
    )
    register(
        "spatial-reduction",
        spatial_attention.build_spatial_reduction,
        spatial_attention.SpatialReductionConfig,
        tags={"image", "sdpa"},
        needs={"grid-2d", "fixed-grid"},
        example={"config": {"ratio": 2}},
    )
    register(
        "conv-proj",
        spatial_attention.build_conv_projection,
        spatial_attention.ConvProjectionConfig,
        tags={"image", "sdpa"},
        needs={"grid-2d", "fixed-grid"},
        example={"config": {"kernel_size": 3, "kv_stride": 2}},
    )
    # 2-D RoPE (issue 10; EVA-02's layout, issue 21): the rotation is defined on the patch grid,
    # so the host keeps every token (no patch dropout).
    register(
        "rope",
        rope.RopeAttention,
        rope.RopeAttentionConfig,
        tags={"image", "mask", "sdpa"},
        needs={"image", "grid-2d", "fixed-grid"},
        example={"config": {"rope": "mixed"}, "model": {"posenc": {"type": "none"}}},
    )


@hookimpl
def register_mlps(register: Any) -> None:
    register("mlp", mlp.build_mlp, mlp.MlpConfig)
    register("swiglu", mlp.build_gated_mlp, mlp.SwigluConfig)
    register("geglu", mlp.build_gated_mlp, mlp.GegluConfig)


@hookimpl
def register_blocks(register: Any) -> None:
    register(
        "pre-norm",
        block.PreNormBlock,
        block.PreNormBlockConfig,
        tags={"mask"},
        offers={"token-mask", "block-mask"},
    )
    # Shared by every late-class-token architecture (CaiT, XCiT): see components.late_class_token.
    register(
        "class-attention",
        class_attention.build_class_attention_block,
        class_attention.ClassAttentionBlockConfig,
        tags={"mask"},
        summary="class-attention block (CaiT): only the class token is updated",
        example={"config": {"layer_scale": 1e-5}, "model": {}},
    )


@hookimpl
def register_pooling(register: Any) -> None:
    register(
        "cls",
        pooling.build_cls_pool,
        pooling.ClsPoolConfig,
        needs={"class-token"},
        offers={"pooled-vector"},
    )
    register("mean", pooling.build_mean_pool, pooling.MeanPoolConfig, offers={"pooled-vector"})
    # SigLIP's attention-pool head, usable in any flat-token spec (CaiT: see examples/).
    register(
        "map",
        attention_pool.build_map_pool,
        attention_pool.MapPoolConfig,
        offers={"pooled-vector"},
        summary="multi-head attention pooling: a learned probe attends to the tokens (SigLIP)",
    )
    register(
        "cls-mean",
        pooling.build_cls_mean_pool,
        pooling.ClsMeanPoolConfig,
        needs={"class-token"},
        offers={"pooled-vector"},
        # registers in the host: the suite then holds the mean to the patch tokens' width
        example={"model": {"register_tokens": 2}},
    )
    register(
        "query-attention",
        query_pool.build_query_pool,
        query_pool.QueryPoolConfig,
        offers={"pooled-vector"},
        example={
            "model": {"attention": {"type": "mhsa", "qk_norm": True, "qk_norm_per_head": True}}
        },
    )
    register(
        "cls-dist",
        pooling.build_cls_dist_pool,
        pooling.ClsDistPoolConfig,
        tags={"distillation"},
        needs={"class-token"},
        offers={"pooled-pair"},
        example={"model": {"distillation_token": True, "head": {"type": "distillation"}}},
    )


@hookimpl
def register_heads(register: Any) -> None:
    register("linear", heads.build_linear_head, heads.LinearHeadConfig, needs={"pooled-vector"})
    register(
        "projection",
        heads.build_projection_head,
        heads.ProjectionHeadConfig,
        needs={"pooled-vector"},
        summary="bias-free linear projection to num_classes outputs (CLIP's image embedding)",
    )
    register(
        "distillation",
        heads.build_distillation_head,
        heads.DistillationHeadConfig,
        tags={"distillation"},
        needs={"pooled-pair"},
        example={"model": {"distillation_token": True, "pool": {"type": "cls-dist"}}},
    )


@hookimpl
def register_objectives(register: Any) -> None:
    register(
        "supervised",
        SupervisedObjective,
        SupervisedConfig,
        tags={"supervised"},
        example={"config": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}},
    )
