"""Weight converter: timm's Twins (``timm.models.twins.Twins``) into vitzoo ``twins-svt`` and
``twins-pcpvt``.

Data only: renames. timm builds both with one class (``twins_svt_*``, ``twins_pcpvt_*``), and
vitzoo builds both with one model class registered twice, so one converter fills both
architectures (PCPVT's blocks simply have no LSA tensors). timm keeps each stage's parts in
parallel lists (``patch_embeds.S``, ``blocks.S.N``, ``pos_block.S``); vitzoo keeps them in one
stage module (``stages.S.downsample``, ``stages.S.blocks.N``, ``stages.S.peg``). The attention
tensors have the same names in both: LSA ``qkv`` / ``proj``; GSA ``q`` / ``kv`` / ``proj`` and,
with sub-sampling, ``sr`` / ``norm``.
"""

from __future__ import annotations

from vitzoo.weights import Rename, WeightConverter

TIMM_TWINS = WeightConverter(
    name="timm-twins",
    source="timm",
    architectures=("twins-svt", "twins-pcpvt"),
    rules=(
        Rename(r"patch_embeds\.(\d+)\.(proj|norm)\.(weight|bias)", r"stages.\1.downsample.\2.\3"),
        Rename(r"blocks\.(\d+)\.(\d+)\.(.+)", r"stages.\1.blocks.\2.\3"),
        Rename(r"pos_block\.(\d+)\.proj\.0\.(weight|bias)", r"stages.\1.peg.proj.\2"),
        Rename(r"norm\.(weight|bias)", r"norm.\1"),
        Rename(r"head\.(weight|bias)", r"head.fc.\1"),
    ),
    config_names=("twins_svt_", "twins_pcpvt_"),
    summary="timm Twins state dicts: SVT (LSA + GSA + PEG) and PCPVT (GSA + PEG)",
    verified_by="tests/test_weights_timm.py",
)

CONVERTERS = (TIMM_TWINS,)
