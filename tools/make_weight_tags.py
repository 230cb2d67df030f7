"""Write the ``weights:`` tags of the presets in ``registry.yaml`` from timm's facts.

Run with the reference environment (timm installed, vitzoo installed editable) and timm's
ImageNet-1k results table::

    /work/refenv/bin/python tools/make_weight_tags.py PATH/TO/timm/results/results-imagenet.csv

For each preset below (the ViT/DeiT presets named here, and every preset of the families in
``FAMILIES`` through its released timm names) and each tag timm registers for that name it
takes the hub repository (``pretrained_cfg.hf_hub_id``), licence, class count and preprocessing
(mean, std, crop_pct, interpolation) from ``timm.models.get_pretrained_cfg``, and the top-1 from
timm's own evaluation table (``results/results-imagenet.csv`` of huggingface/pytorch-image-models).
The dataset line is written per tag below (timm's naming: ``in21k_ft_in1k`` = ImageNet-21k
pre-training, ImageNet-1k fine-tuning). The first tag kept is the preset's default. Tags whose
head is another class count than the preset's carry ``num_classes``.

A tag is kept only where its weights compute the preset's function (:func:`skip_reason`), and
each kept tag's full-size layout (timm's own model, built on the meta device with the tag's
class count) is mapped strictly onto the preset by vitzoo's converter before it is written. The
YAML is one line per tag and replaces any ``weights:`` block already there; skipped tags are
printed with their reason.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {
    "vit-ti16": "vit_tiny_patch16_224",
    "vit-s16": "vit_small_patch16_224",
    "vit-b16": "vit_base_patch16_224",
    "vit-b32": "vit_base_patch32_224",
    "vit-l16": "vit_large_patch16_224",
    "deit-ti": "deit_tiny_patch16_224",
    "deit-s": "deit_small_patch16_224",
    "deit-b": "deit_base_patch16_224",
    "deit-b-384": "deit_base_patch16_384",
    "deit-ti-distilled": "deit_tiny_distilled_patch16_224",
    "deit-s-distilled": "deit_small_distilled_patch16_224",
    "deit-b-distilled": "deit_base_distilled_patch16_224",
    "deit-b-distilled-384": "deit_base_distilled_patch16_384",
}
#: Families whose presets take every tag of their released timm names (after the checks).
FAMILIES = ("dinov2", "deit3", "clip", "eva", "beit", "swin", "aimv2")

_IMAGE_TEXT = "image-text pairs, contrastive image tower"
#: What each tag was trained on (timm's tag names; the papers / model cards for the facts).
DATASETS = {
    "augreg_in21k_ft_in1k": "ImageNet-21k pre-training (AugReg), ImageNet-1k fine-tuning",
    "augreg2_in21k_ft_in1k": "ImageNet-21k pre-training (AugReg), ImageNet-1k fine-tuning (timm's second, augmented fine-tune)",
    "orig_in21k_ft_in1k": "ImageNet-21k pre-training, ImageNet-1k fine-tuning (the original ViT release)",
    "augreg_in1k": "ImageNet-1k (AugReg)",
    "augreg_in21k": "ImageNet-21k (AugReg), 21843-class head",
    "orig_in21k": "ImageNet-21k (the original ViT release), no head",
    "sam_in1k": "ImageNet-1k with SAM optimiser",
    "dino": "ImageNet-1k, self-supervised (DINO), no head",
    "mae": "ImageNet-1k, self-supervised (MAE), no head",
    "fb_in1k": "ImageNet-1k (the authors' DeiT release)",
    # DINOv2, DeiT III, AIMv2
    "lvd142m": "LVD-142M, self-supervised (DINOv2), no head",
    "fb_in22k_ft_in1k": "ImageNet-21k pre-training, ImageNet-1k fine-tuning (the authors' DeiT III release)",
    "apple_pt": "AIMv2 multimodal autoregressive pre-training (Apple's release), no head",
    "apple_pt_dist": "AIMv2 pre-training, distilled from a larger AIMv2 (Apple's release), no head",
    # CLIP / OpenCLIP and SigLIP towers (no classifier: the head is the image embedding)
    "openai": f"OpenAI's 400M {_IMAGE_TEXT} (CLIP)",
    "laion2b": f"LAION-2B (English) {_IMAGE_TEXT} (OpenCLIP)",
    "laion400m_e32": f"LAION-400M {_IMAGE_TEXT}, 32 epochs (OpenCLIP)",
    "datacompxl": f"DataComp-1B {_IMAGE_TEXT} (OpenCLIP, DataComp XL)",
    "dfn2b": f"DFN-2B {_IMAGE_TEXT} (Data Filtering Networks)",
    "dfn2b_s39b": f"DFN-2B {_IMAGE_TEXT} (Data Filtering Networks), 39B samples seen",
    "dfn5b": f"DFN-5B {_IMAGE_TEXT} (Data Filtering Networks)",
    "apple_mclip2_dfndr2b": f"DFNDR-2B {_IMAGE_TEXT} (MobileCLIP2's reinforced DFN data)",
    "metaclip_400m": f"MetaCLIP 400M curated {_IMAGE_TEXT}",
    "metaclip_2pt5b": f"MetaCLIP 2.5B curated {_IMAGE_TEXT}",
    "metaclip_altogether": f"MetaCLIP 2.5B curated {_IMAGE_TEXT}, Altogether re-aligned captions",
    "metaclip2_worldwide": f"MetaCLIP 2 worldwide (multilingual) curated {_IMAGE_TEXT}",
    "webli": f"WebLI (English) {_IMAGE_TEXT} (SigLIP, sigmoid loss)",
    "webli_i18n": f"WebLI multilingual {_IMAGE_TEXT} (SigLIP i18n)",
    "v2_webli": f"WebLI multilingual {_IMAGE_TEXT} (SigLIP 2: sigmoid loss with captioning, self-distillation and masked prediction)",
    # EVA-02 (masked image modelling against EVA-CLIP features)
    "mim_in22k": "ImageNet-22k, masked image modelling (EVA-02), no head",
    "mim_m38m": "Merged-38M, masked image modelling (EVA-02), no head",
    "mim_in22k_ft_in1k": "EVA-02 MIM on ImageNet-22k, ImageNet-1k fine-tuning",
    "mim_in22k_ft_in22k": "EVA-02 MIM on ImageNet-22k, ImageNet-22k fine-tuning, 21841-class head",
    "mim_in22k_ft_in22k_in1k": "EVA-02 MIM on ImageNet-22k, ImageNet-22k then ImageNet-1k fine-tuning",
    "mim_m38m_ft_in1k": "EVA-02 MIM on Merged-38M, ImageNet-1k fine-tuning",
    "mim_m38m_ft_in22k": "EVA-02 MIM on Merged-38M, ImageNet-22k fine-tuning, 21841-class head",
    "mim_m38m_ft_in22k_in1k": "EVA-02 MIM on Merged-38M, ImageNet-22k then ImageNet-1k fine-tuning",
    # BEiT / BEiT v2 (self-supervised pre-training, then supervised fine-tuning)
    "in22k_ft_in22k": "BEiT pre-training on ImageNet-22k, ImageNet-22k fine-tuning, 21841-class head",
    "in22k_ft_in22k_in1k": "BEiT pre-training on ImageNet-22k, ImageNet-22k then ImageNet-1k fine-tuning",
    "in1k_ft_in1k": "BEiT v2 pre-training on ImageNet-1k, ImageNet-1k fine-tuning",
    "in1k_ft_in22k": "BEiT v2 pre-training on ImageNet-1k, ImageNet-22k fine-tuning, 21841-class head",
    "in1k_ft_in22k_in1k": "BEiT v2 pre-training on ImageNet-1k, ImageNet-22k then ImageNet-1k fine-tuning",
    # Swin / Swin V2 (Microsoft's releases)
    "ms_in1k": "ImageNet-1k (Microsoft's release)",
    "ms_in22k": "ImageNet-22k (Microsoft's release), 21841-class head",
    "ms_in22k_ft_in1k": "ImageNet-22k pre-training, ImageNet-1k fine-tuning (Microsoft's release)",
}
SKIP = {"bamboo"}  # other normalisation and a 115k-class head: not the preset's function
#: Heads that are a bias-free projection (the image embedding): a classifier fine-tune of the
#: same tower has a biased head of another width, which such a preset cannot hold.
PROJECTION_HEADS = {"clip", "siglip", "siglip2-naflex"}


def catalogue() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "registry.yaml").read_text(encoding="utf-8"))["presets"]


def timm_names(entries: dict[str, Any]) -> dict[str, list[str]]:
    """Preset -> the timm names whose tags it takes."""
    names = {preset: [arch] for preset, arch in PRESETS.items()}
    for preset, entry in entries.items():
        if entry["plugin"] in FAMILIES:
            names[preset] = list(entry.get("released", {}).get("timm", []))
    return names


def quickgelu_tags(entries: dict[str, Any], names: dict[str, list[str]], tags_of) -> set[str]:
    """``preset-quickgelu:tag`` twins: timm lists OpenAI / MetaCLIP / some DFN weights under
    both the GELU and the QuickGELU tower, but they were trained with QuickGELU (OpenCLIP lists
    them under the ``-quickgelu`` models only), so the GELU preset computes another function."""
    found = set()
    for preset in entries:
        if preset.endswith("-quickgelu"):
            base = preset.removesuffix("-quickgelu")
            found |= {f"{base}:{tag}" for name in names.get(preset, []) for tag in tags_of(name)}
    return found


def skip_reason(preset: str, entry: dict[str, Any], tag: str, cfg: dict, twins: set[str]) -> str:
    """Why ``tag`` does not compute ``preset``'s function ('' when it does)."""
    model = entry["spec"]["model"]
    if tag in SKIP:
        return "another normalisation and head"
    if f"{preset}:{tag}" in twins:
        return "trained with QuickGELU: a tag of the -quickgelu preset"
    if not str(cfg.get("hf_hub_id") or "").startswith("timm/") or cfg.get("hf_hub_filename"):
        return f"weights outside timm's hub folders ({cfg.get('hf_hub_id')})"
    native = model["type"] == "siglip2-naflex"
    if not native and tuple(cfg["input_size"][1:]) != (model["image_size"],) * 2:
        return f"input size {cfg['input_size'][1:]} is another preset's"
    classes = cfg["num_classes"]
    if model["type"] in PROJECTION_HEADS and classes not in (0, model.get("num_classes", 0)):
        return f"a {classes}-class classifier fine-tune (the preset's head is the image embedding)"
    return ""


def check_layout(preset: str, full: str, classes: int) -> None:
    """timm's model for ``full`` (meta device, the tag's class count) maps strictly onto the
    preset with that class count through the converter that recognises it."""
    import timm
    import torch

    import vitzoo
    from vitzoo.weights import converters_for
    from vitzoo.weights.converter import raise_for_problems, target_shapes

    with torch.device("meta"):
        theirs = timm.create_model(full.split(".")[0], pretrained=False, num_classes=classes)
        ours = vitzoo.build(preset, num_classes=classes)
    tensors = dict(theirs.state_dict())
    own = converters_for(ours.vitzoo_spec.model.type, "timm")
    recognising = [c for c in own if c.recognises(tensors, {})]
    assert len(recognising) == 1, f"{full}: recognised by {[c.name for c in recognising]}"
    shapes = target_shapes(ours)
    raise_for_problems(recognising[0].convert(tensors, shapes), shapes, f"{full} -> {preset}")


def tag_line(tag: str, full: str, cfg: dict, default: bool, top1: dict, classes: int) -> str:
    fields = [f"hub: {cfg['hf_hub_id']}"]
    if default:
        fields.append("default: true")
    if cfg.get("license"):
        fields.append(f"licence: {cfg['license']}")
    fields.append(f'dataset: "{DATASETS[tag]}"')
    if full in top1:
        fields.append(f"top1: {top1[full]}")
        fields.append("top1_source: timm results-imagenet.csv")
    prep = (
        f"{{mean: {list(cfg['mean'])}, std: {list(cfg['std'])}, "
        f"crop_pct: {cfg['crop_pct']}, interpolation: {cfg['interpolation']}}}"
    )
    fields.append(f"preprocessing: {prep}")
    if cfg["num_classes"] != classes:
        fields.append(f"num_classes: {cfg['num_classes']}")
    return f"      {tag.replace('_', '-')}: {{{', '.join(fields)}}}"


def insert_block(text: str, preset: str, block: str) -> str:
    """``block`` as the preset entry's ``weights:`` (an old one removed), just before ``spec:``."""
    name = re.escape(preset)
    old = re.compile(rf"(\n  {name}:\n(?:    (?!weights:).*\n)*?)    weights:\n(?:      .*\n)+")
    text = old.sub(r"\1", text)
    entry = re.compile(rf"(\n  {name}:\n(?:    .*\n|      .*\n)*?)(    spec:\n)")
    text, count = entry.subn(lambda m: m.group(1) + block + m.group(2), text, count=1)
    assert count == 1, preset
    return text


def read_top1(results_csv: str) -> dict[str, float]:
    with open(results_csv, newline="") as handle:
        return {row["model"]: float(row["top1"]) for row in csv.DictReader(handle)}


def main(results_csv: str) -> None:
    from timm.models import get_pretrained_cfg
    from timm.models._registry import _model_with_tags

    def tags_of(name: str) -> list[str]:
        return [full.split(".", 1)[1] for full in _model_with_tags.get(name, [])]

    top1 = read_top1(results_csv)
    entries = catalogue()
    names = timm_names(entries)
    twins = quickgelu_tags(entries, names, tags_of)
    path = ROOT / "registry.yaml"
    text = path.read_text(encoding="utf-8")
    for preset, archs in names.items():
        entry = entries[preset]
        classes = entry["spec"]["model"].get("num_classes", 0)
        lines, seen = [], set()
        for arch in archs:
            for tag in tags_of(arch):
                full = f"{arch}.{tag}"
                cfg = get_pretrained_cfg(full).to_dict()
                reason = "another name's tag of the same spelling" if tag in seen else ""
                reason = reason or skip_reason(preset, entry, tag, cfg, twins)
                if reason:
                    print(f"skip {preset} {full}: {reason}")
                    continue
                check_layout(preset, full, cfg["num_classes"])
                lines.append(tag_line(tag, full, cfg, not lines, top1, classes))
                seen.add(tag)
        if lines:
            text = insert_block(text, preset, "    weights:\n" + "\n".join(lines) + "\n")
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
