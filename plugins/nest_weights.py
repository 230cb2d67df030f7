"""Weight converter: timm's NesT (``timm.models.nest.Nest``) into vitzoo ``nest``.

Data only: renames. timm's ``levels.L`` (``pos_embed``, ``pool`` = conv / LayerNorm / max-pool
aggregation, ``transformer_encoder.N``) are vitzoo's ``stages.L`` (``pos_embed``,
``aggregate``, ``blocks.N``); both keep the position table as (1, blocks, tokens, dim).
"""

from __future__ import annotations

from vitzoo.weights import Rename, WeightConverter

TIMM_NEST = WeightConverter(
    name="timm-nest",
    source="timm",
    architectures=("nest",),
    rules=(
        Rename(r"patch_embed\.proj\.(weight|bias)", r"stem.\1"),
        Rename(r"levels\.(\d+)\.pos_embed", r"stages.\1.pos_embed"),
        Rename(r"levels\.(\d+)\.pool\.(conv|norm)\.(weight|bias)", r"stages.\1.aggregate.\2.\3"),
        Rename(r"levels\.(\d+)\.transformer_encoder\.(\d+)\.(.+)", r"stages.\1.blocks.\2.\3"),
        Rename(r"norm\.(weight|bias)", r"norm.\1"),
        Rename(r"head\.(weight|bias)", r"head.fc.\1"),
    ),
    config_names=("nest_",),
    summary="timm Nest state dicts (the authors' JAX weights as ported by timm)",
    equivalents=(("nest-t", "nest_tiny_jx"), ("nest-s", "nest_small_jx")),
    verified_by="tests/test_weights_timm.py",
)

CONVERTERS = (TIMM_NEST,)
