"""Weight converter: timm's PiT (``timm.models.pit.PoolingVisionTransformer``) into vitzoo ``pit``.

Data only: renames. timm's ``transformers.N`` stages are vitzoo's ``stages.N`` (the pooling of
stage N sits in that stage in both), the overlapping patch conv is vitzoo's ``stem``, and the
pooling Linear that widens the prefix tokens is ``pool.fc`` in timm, ``pool.cls`` in vitzoo.
The distilled models keep class and distillation token in one (1, 2, D) ``cls_token`` in both.
"""

from __future__ import annotations

from vitzoo.weights import Rename, WeightConverter

TIMM_PIT = WeightConverter(
    name="timm-pit",
    source="timm",
    architectures=("pit",),
    rules=(
        Rename(r"patch_embed\.conv\.(weight|bias)", r"stem.\1"),
        Rename(r"(pos_embed|cls_token)", r"\1"),
        Rename(r"transformers\.(\d+)\.blocks\.(\d+)\.(.+)", r"stages.\1.blocks.\2.\3"),
        Rename(r"transformers\.(\d+)\.pool\.conv\.(weight|bias)", r"stages.\1.pool.conv.\2"),
        Rename(r"transformers\.(\d+)\.pool\.fc\.(weight|bias)", r"stages.\1.pool.cls.\2"),
        Rename(r"norm\.(weight|bias)", r"norm.\1"),
        Rename(r"head\.(weight|bias)", r"head.fc.\1"),
        Rename(r"head_dist\.(weight|bias)", r"head.fc_dist.\1"),
    ),
    config_names=("pit_",),
    summary="timm PoolingVisionTransformer state dicts (plain and distilled)",
    verified_by="tests/test_weights_timm.py",
)

CONVERTERS = (TIMM_PIT,)
