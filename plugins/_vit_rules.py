"""timm's ``VisionTransformer`` key layout as converter rules, shared by every family timm
builds with that class (ViT / DeiT, DeiT III, DINOv2, AIMv2): private to the built-in plugins,
so no family's plugin imports another's.

timm names the same parts the same way whatever the family (``patch_embed.proj``,
``cls_token`` / ``reg_token``, ``pos_embed``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma,
norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``, ``head``); the vitzoo ViT base mirrors them.
"""

from __future__ import annotations

from vitzoo.weights import Rename

TIMM_VIT_RULES = (
    Rename(r"patch_embed\.proj\.(weight|bias)", r"patch.proj.\1"),
    Rename(r"(cls_token|dist_token|reg_token)", r"\1"),
    Rename(r"pos_embed", r"posenc.pos_embed"),
    Rename(
        r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|attn\.q_norm|attn\.k_norm|mlp\.fc1|mlp\.fc2)"
        r"\.(weight|bias)",
        r"blocks.\1.\2.\3",
    ),
    Rename(r"blocks\.(\d+)\.(ls1|ls2)\.gamma", r"blocks.\1.\2.gamma"),
    Rename(r"norm\.(weight|bias)", r"norm.\1"),
    Rename(r"norm_pre\.(weight|bias)", r"norm_pre.\1"),
    # global_pool='map': timm's AttentionPoolLatent, the vitzoo ``map`` pooling (same names)
    Rename(r"attn_pool\.(latent|(?:q|kv|proj|norm|mlp\.fc[12])\.(?:weight|bias))", r"pool.\1"),
    Rename(r"head\.(weight|bias)", r"head.fc.\1"),
    Rename(r"head_dist\.(weight|bias)", r"head.fc_dist.\1"),
)
