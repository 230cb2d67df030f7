"""Write the full-size state-dict layouts (key -> shape) of the peers' released models.

The tiny fixtures (``make_reference_fixtures.py``) prove that a converter computes the same
function; these layouts prove that it maps every tensor of the full-size released checkpoint
onto the matching vitzoo preset (names and shapes, strictly), without shipping any weights.
Models are built on the meta device, so nothing is allocated or downloaded.

Usage, in the reference environment, with checkouts of the official DINOv2 and DeiT repositories
and apple/ml-aim (not on PyPI)::

    DINOV2_REPO=/tmp/dinov2 DEIT_REPO=/tmp/deit ML_AIM_REPO=/tmp/ml-aim \
        /work/refenv/bin/python tools/make_reference_layouts.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference" / "layouts.json.gz"

#: timm model names whose released checkpoints the vitzoo presets claim to load.
TIMM_NAMES = [
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_large_patch16_224",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_base_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "deit_small_distilled_patch16_224",
    "deit_base_distilled_patch16_224",
    "cait_xxs24_224",
    "cait_s24_224",
    "pit_ti_224",
    "pit_xs_224",
    "pit_s_224",
    "pit_b_224",
    "pit_ti_distilled_224",
    "pit_xs_distilled_224",
    "pit_s_distilled_224",
    "pit_b_distilled_224",
    "twins_svt_small",
    "twins_svt_base",
    "nest_tiny_jx",
    "nest_small_jx",
    "mobilevit_xxs",
    "mobilevit_xs",
    "mobilevit_s",
    # issue 10's new presets whose released timm checkpoints have a 1000-class head
    "vit_base_patch32_224",
    "deit_base_patch16_384",
    "deit_base_distilled_patch16_384",
    "cait_xxs36_224",
    "cait_xs24_384",
    "cait_s24_384",
    "cait_s36_384",
    "cait_m36_384",
    "cait_m48_448",
    "twins_svt_large",
    "twins_pcpvt_small",
    "twins_pcpvt_base",
    "twins_pcpvt_large",
    "nest_base_jx",
    "xcit_nano_12_p16_224",
    "xcit_tiny_24_p16_224",
    "xcit_small_12_p16_224",
    "xcit_small_24_p16_224",
    "xcit_medium_24_p16_224",
    "levit_384",
    "maxvit_small_tf_224",
    "maxvit_base_tf_224",
    "maxvit_large_tf_224",
    "crossvit_9_240",
    "crossvit_15_240",
    "crossvit_18_240",
    "crossvit_base_240",
    "crossvit_9_dagger_240",
    "crossvit_15_dagger_240",
    "crossvit_18_dagger_240",
    # issue 21: backbones for small-data fine-tuning
    *(
        f"vit_{size}_patch14_{reg}dinov2"
        for size in ("small", "base", "large", "giant")
        for reg in ("", "reg4_")
    ),
    *(f"deit3_{size}_patch16_224" for size in ("small", "medium", "base", "large")),
    "deit3_huge_patch14_224",
    *(f"deit3_{size}_patch16_384" for size in ("small", "base", "large")),
    *(
        f"aimv2_{size}_patch14_{px}"
        for size in ("large", "huge", "1b", "3b")
        for px in (224, 336, 448)
    ),
]

#: Official CCT models (vit-pytorch's port has the official module tree): name -> constructor.
CCT = {
    "cct_7_3x1_32": ("cct_7", dict(img_size=32, kernel_size=3, n_conv_layers=1, num_classes=10)),
    "cct_14_7x2_224": (
        "cct_14",
        dict(img_size=224, kernel_size=7, n_conv_layers=2, num_classes=1000),
    ),
}


#: Official DINOv2 hub models (facebookresearch/dinov2, checkout in DINOV2_REPO): hub function
#: names, built with pretrained=False as torch.hub.load builds them.
DINOV2_HUB = [f"dinov2_vit{s}14{reg}" for s in "sblg" for reg in ("", "_reg")]
#: Official DeiT III (facebookresearch/deit models_v2.py, checkout in DEIT_REPO): release file
#: stem -> (constructor, image size).
DEIT3 = {
    **{
        f"deit_3_{size}_224": (f"deit_{size}_patch{14 if size == 'huge' else 16}_LS", 224)
        for size in ("small", "medium", "base", "large", "huge")
    },
    **{
        f"deit_3_{size}_384": (f"deit_{size}_patch16_LS", 384)
        for size in ("small", "base", "large")
    },
}
#: Official AIMv2 encoders (apple/ml-aim, checkout in ML_AIM_REPO): release name (as on the
#: Hugging Face hub, apple/<name>) -> (constructor, image size).
AIMV2 = {
    f"aimv2-{size}-patch14-{px}": (f"aimv2_{size}", px)
    for size in ("large", "huge", "1B", "3B")
    for px in (224, 336, 448)
}


def official_checkout(variable: str, url: str) -> str:
    """The path of a checkout of an official repository that is not on PyPI."""
    import os

    path = os.environ.get(variable)
    if not path:
        raise SystemExit(f"set {variable} to a checkout of {url} (git clone {url})")
    return path


def official_layouts() -> dict[str, dict[str, list[int]]]:
    """DINOv2 hub backbones, DeiT III and AIMv2 models, from their authors' constructors."""
    import os
    import sys

    sys.path.insert(
        0, official_checkout("DINOV2_REPO", "https://github.com/facebookresearch/dinov2")
    )
    sys.path.insert(0, official_checkout("DEIT_REPO", "https://github.com/facebookresearch/deit"))
    ml_aim = official_checkout("ML_AIM_REPO", "https://github.com/apple/ml-aim")
    sys.path[:0] = [os.path.join(ml_aim, "aim-v1"), os.path.join(ml_aim, "aim-v2")]
    import models_v2
    from aim.v2.torch import models as aimv2
    from dinov2.hub import backbones

    out = {}
    with torch.device("meta"):
        for name in DINOV2_HUB:
            out[name] = layout(getattr(backbones, name)(pretrained=False))
        for stem, (fn, size) in DEIT3.items():
            out[stem] = layout(getattr(models_v2, fn)(pretrained=False, img_size=size))
        for name, (fn, size) in AIMV2.items():
            out[name] = layout(getattr(aimv2, fn)(img_size=size))
    return out


def layout(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def main() -> None:
    import timm
    import vit_pytorch.cct as cct

    layouts: dict[str, dict[str, dict[str, list[int]]]] = {"timm": {}, "official": {}}
    for name in TIMM_NAMES:
        with torch.device("meta"):
            layouts["timm"][name] = layout(timm.create_model(name, pretrained=False))
    for name, (fn, kwargs) in CCT.items():
        # CCT's constructor calls .item() on a tensor, which the meta device refuses.
        model = getattr(cct, fn)(positional_embedding="learnable", **kwargs)
        layouts["official"][name] = layout(model)
    layouts["official"].update(official_layouts())
    OUT.write_bytes(gzip.compress(json.dumps(layouts, sort_keys=True).encode(), mtime=0))
    print(f"{OUT}: {OUT.stat().st_size / 1024:.0f} KiB, {sum(map(len, layouts.values()))} models")


if __name__ == "__main__":
    main()
