"""Weight converter: timm's MobileViT (a ``timm.models.byobnet.ByobNet``) into vitzoo ``mobilevit``.

Data only: renames. timm's stage layout (``stages.S.B``: the MV2 blocks, then the MobileViT
block) is vitzoo's; the names inside differ: a timm ConvNormAct is ``conv`` + ``bn``, vitzoo's
is a Sequential ``0`` + ``1``; the MV2 block's ``conv1_1x1`` / ``conv2_kxk`` / ``conv3_1x1`` are
``expand`` / ``depthwise`` / ``project``; the MobileViT block's ``conv_kxk`` / ``conv_1x1`` /
``transformer.N`` / ``conv_proj`` / ``conv_fusion`` are ``local`` / ``to_tokens`` / ``blocks.N``
/ ``from_tokens`` / ``fuse``; timm's ``final_conv`` is ``expand``.
"""

from __future__ import annotations

from vitzoo.weights import Rename, WeightConverter

#: BatchNorm tensors, running statistics included.
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_CONV_NORM = {
    "conv1_1x1": "expand",
    "conv2_kxk": "depthwise",
    "conv3_1x1": "project",
    "conv_kxk": "local",
    "conv_proj": "from_tokens",
    "conv_fusion": "fuse",
}

TIMM_MOBILEVIT = WeightConverter(
    name="timm-mobilevit",
    source="timm",
    architectures=("mobilevit",),
    rules=(
        Rename(r"stem\.conv\.weight", r"stem.0.weight"),
        Rename(rf"stem\.bn\.{_BN}", r"stem.1.\1"),
        *(
            rule
            for theirs, ours in _CONV_NORM.items()
            for rule in (
                Rename(
                    rf"stages\.(\d+)\.(\d+)\.{theirs}\.conv\.weight",
                    rf"stages.\1.\2.{ours}.0.weight",
                ),
                Rename(rf"stages\.(\d+)\.(\d+)\.{theirs}\.bn\.{_BN}", rf"stages.\1.\2.{ours}.1.\3"),
            )
        ),
        Rename(r"stages\.(\d+)\.(\d+)\.conv_1x1\.weight", r"stages.\1.\2.to_tokens.weight"),
        Rename(r"stages\.(\d+)\.(\d+)\.transformer\.(\d+)\.(.+)", r"stages.\1.\2.blocks.\3.\4"),
        Rename(r"stages\.(\d+)\.(\d+)\.norm\.(weight|bias)", r"stages.\1.\2.norm.\3"),
        Rename(r"final_conv\.conv\.weight", r"expand.0.weight"),
        Rename(rf"final_conv\.bn\.{_BN}", r"expand.1.\1"),
        Rename(r"head\.fc\.(weight|bias)", r"head.fc.\1"),
    ),
    config_names=("mobilevit_",),
    summary="timm MobileViT (v1) state dicts (ByobNet layout)",
    verified_by="tests/test_weights_timm.py",
)

CONVERTERS = (TIMM_MOBILEVIT,)
