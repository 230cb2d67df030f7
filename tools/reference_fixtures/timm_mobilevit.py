"""Fixture: timm's MobileViT (a ByobNet) with mobilevit_xxs's layout at tiny widths.

timm defines MobileViT-XXS as a ByobNet config; its widths are fixed in that config, so the
fixture builds ``ByobNet`` from a config of the same shape (3x3 stem, MV2 stages, MobileViT
blocks with 2x2 patches, SiLU, a final 1x1 conv) made of the same timm block helpers.
"""

from reference_fixtures import Fixture

#: (kind, depth, channels, stride, expansion, transformer dim, transformer depth) per stage.
#: ByobNet rounds channels to multiples of 8, so only such widths say what they build.
STAGES = [
    ("mv2", 1, 8, 1, 2.0, 0, 0),
    ("mv2", 1, 16, 2, 2.0, 0, 0),
    ("mobilevit", 1, 16, 1, 2.0, 8, 1),
    ("mobilevit", 1, 16, 2, 2.0, 16, 2),
]
TINY = {"img_size": 32, "stem_chs": 8, "num_features": 32, "patch_size": 2, "num_classes": 5}


def _mobilevit():
    from timm.models.byobnet import ByobNet, ByoModelCfg
    from timm.models.mobilevit import _inverted_residual_block, _mobilevit_block

    blocks = []
    for kind, d, c, s, br, tdim, tdepth in STAGES:
        if kind == "mv2":
            blocks.append(_inverted_residual_block(d=d, c=c, s=s, br=br))
        else:
            blocks.append(
                _mobilevit_block(
                    d=d,
                    c=c,
                    s=s,
                    transformer_dim=tdim,
                    transformer_depth=tdepth,
                    patch_size=TINY["patch_size"],
                    br=br,
                )
            )
    cfg = ByoModelCfg(
        blocks=tuple(blocks),
        stem_chs=TINY["stem_chs"],
        stem_type="3x3",
        stem_pool="",
        downsample="",
        act_layer="silu",
        num_features=TINY["num_features"],
    )
    return ByobNet(cfg, num_classes=TINY["num_classes"])


#: Noise scale: at these widths the driver's default (0.05) leaves attention near uniform, so a
#: wrong q/k map would still agree; 0.3 makes every tensor move the output measurably.
NOISE = 0.3

FIXTURES = [
    Fixture(
        name="timm-mobilevit",
        build=_mobilevit,
        input_shape=(2, 3, 32, 32),
        constructor="timm.models.byobnet.ByobNet(ByoModelCfg(mobilevit_xxs layout at tiny widths: "
        f"stages {STAGES}, stem 8, final 1x1 to 32, SiLU), num_classes=5)",
        meta={"timm_name": "mobilevit_xxs", **TINY, "stages": STAGES},
        noise=NOISE,
    ),
]
