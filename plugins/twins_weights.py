"""Weight converter: timm's Twins-SVT (``timm.models.twins.Twins``) into vitzoo ``twins-svt``.

Data only: renames. timm keeps each stage's parts in parallel lists (``patch_embeds.S``,
``blocks.S.N``, ``pos_block.S``); vitzoo keeps them in one stage module (``stages.S.downsample``,
``stages.S.blocks.N``, ``stages.S.peg``). The attention tensors have the same names in both:
LSA ``qkv`` / ``proj``; GSA ``q`` / ``kv`` / ``proj`` and, with sub-sampling, ``sr`` / ``norm``.
"""

from __future__ import annotations

from vitzoo.weights import Rename, WeightConverter

TIMM_TWINS = WeightConverter(
    name="timm-twins-svt",
    source="timm",
    architectures=("twins-svt",),
    rules=(
        Rename(r"patch_embeds\.(\d+)\.(proj|norm)\.(weight|bias)", r"stages.\1.downsample.\2.\3"),
        Rename(r"blocks\.(\d+)\.(\d+)\.(.+)", r"stages.\1.blocks.\2.\3"),
        Rename(r"pos_block\.(\d+)\.proj\.0\.(weight|bias)", r"stages.\1.peg.proj.\2"),
        Rename(r"norm\.(weight|bias)", r"norm.\1"),
        Rename(r"head\.(weight|bias)", r"head.fc.\1"),
    ),
    config_names=("twins_svt_",),
    summary="timm Twins state dicts, SVT layout (LSA + GSA + PEG)",
    equivalents=(("twins-svt-s", "twins_svt_small"), ("twins-svt-b", "twins_svt_base")),
    verified_by="tests/test_weights_timm.py",
)

CONVERTERS = (TIMM_TWINS,)
