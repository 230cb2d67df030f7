"""Write the full-size state-dict layouts (key -> shape) of the peers' released models.

The tiny fixtures (``make_reference_fixtures.py``) prove that a converter computes the same
function; these layouts prove that it maps every tensor of the full-size released checkpoint
onto the matching vitzoo preset (names and shapes, strictly), without shipping any weights.
Models are built on the meta device, so nothing is allocated or downloaded.

The official XCiT code (facebookresearch/xcit, not on PyPI; its ``xcit.py`` needs only timm) is
read from a checkout given as the first argument; the official DINOv2 and DeiT repositories and
apple/ml-aim from checkouts named by environment variables. Usage, in the reference
environment::

    git clone https://github.com/facebookresearch/xcit /tmp/xcit   # used: commit 82f5291
    DINOV2_REPO=/tmp/dinov2 DEIT_REPO=/tmp/deit ML_AIM_REPO=/tmp/ml-aim \
        /work/refenv/bin/python tools/make_reference_layouts.py /tmp/xcit
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference" / "layouts.json.gz"

#: The catalogue: its ``released: {timm: [...]}`` names are the timm checkpoints the presets
#: claim to load (the one home of those names; this script reads them, never lists them again).
CATALOGUE = Path(__file__).resolve().parents[1] / "registry.yaml"


def released(source: str) -> dict[str, dict]:
    """Released name -> the spec of the preset that claims it (its head decides the layout:
    timm's CLIP towers release a projection head, SigLIP towers none, classifiers 1000)."""
    import yaml

    presets = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))["presets"]
    return {
        name: entry["spec"]
        for entry in presets.values()
        for name in entry.get("released", {}).get(source, [])
    }


def open_clip_layout(name: str) -> dict[str, list[int]]:
    """OpenCLIP's image-text model of that name (OpenAI's layout, text tower included), built on
    the meta device from OpenCLIP's own config."""
    import open_clip
    from open_clip.model import CLIP

    config = dict(open_clip.get_model_config(name))
    config["quick_gelu"] = config.get("quick_gelu", False)
    config = {
        k: v
        for k, v in config.items()
        if k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")
    }
    with torch.device("meta"):
        return layout(CLIP(**config))


def official_swin_layouts() -> dict[str, dict[str, list[int]]]:
    """Microsoft's Swin / Swin V2 checkpoints: the timm model the same preset releases,
    re-keyed into the official layout with its saved buffers
    (``reference_fixtures.swin.official_state_dict``, checked against microsoft/Swin-Transformer's
    own modules)."""
    import timm
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reference_fixtures.swin import official_state_dict

    presets = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))["presets"]
    out = {}
    for entry in presets.values():
        if entry.get("plugin") != "swin":
            continue
        classes = entry["spec"]["model"].get("num_classes", 1000)
        for name in entry.get("released", {}).get("official", []):
            with torch.device("meta"):
                twin = entry["released"]["timm"][0]
                model = timm.create_model(twin, pretrained=False, num_classes=classes)
            out[name] = {k: list(v.shape) for k, v in official_state_dict(model).items()}
    return out


def official_xcit_module(checkout: Path):
    """facebookresearch/xcit's ``xcit.py`` (its checkpoints are ``<constructor>_224.pth``)."""
    spec = importlib.util.spec_from_file_location("official_xcit", checkout / "xcit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # timm's @register_model looks the module up there
    spec.loader.exec_module(module)
    return module


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

    if len(sys.argv) != 2:
        sys.exit(__doc__)
    xcit = official_xcit_module(Path(sys.argv[1]))
    layouts: dict[str, dict[str, dict[str, list[int]]]] = {"timm": {}, "official": {}}
    for name, spec in sorted(released("timm").items()):
        classes = spec["model"].get("num_classes", 1000)
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=classes)
        layouts["timm"][name] = layout(model)
    ready = {**official_swin_layouts(), **official_layouts()}
    for name in sorted(released("official")):
        if name in ready:
            layouts["official"][name] = ready[name]
            continue
        if name.startswith("ViT-"):  # OpenCLIP's model names
            layouts["official"][name] = open_clip_layout(name)
            continue
        if name in CCT:
            fn, kwargs = CCT[name]
            # CCT's constructor calls .item() on a tensor, which the meta device refuses.
            model = getattr(cct, fn)(positional_embedding="learnable", **kwargs)
        else:
            with torch.device("meta"):
                model = getattr(xcit, name.removesuffix("_224"))()
        layouts["official"][name] = layout(model)
    OUT.write_bytes(gzip.compress(json.dumps(layouts, sort_keys=True).encode(), mtime=0))
    print(f"{OUT}: {OUT.stat().st_size / 1024:.0f} KiB, {sum(map(len, layouts.values()))} models")


if __name__ == "__main__":
    main()
