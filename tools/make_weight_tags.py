"""Write the ``weights:`` tags of the ViT / DeiT presets in ``registry.yaml`` from timm's facts.

Run with the reference environment (timm installed) and timm's ImageNet-1k results table::

    /work/refenv/bin/python tools/make_weight_tags.py PATH/TO/timm/results/results-imagenet.csv

For each preset below and each tag timm registers for its timm name it takes the hub repository
(``pretrained_cfg.hf_hub_id``), licence, class count and preprocessing (mean, std, crop_pct,
interpolation) from ``timm.models.get_pretrained_cfg``, and the top-1 from timm's own evaluation
table (``results/results-imagenet.csv`` of huggingface/pytorch-image-models). The dataset line is
read off the tag (timm's naming: ``in21k_ft_in1k`` = ImageNet-21k pre-training, ImageNet-1k
fine-tuning). The first tag timm lists (its default) is the preset's default. Tags whose head is
another class count than the preset's carry ``num_classes``. The YAML is printed as one line per
tag and replaces any ``weights:`` block already there.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

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
#: Tags whose pre-training is not supervised classification on the named data.
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
}
SKIP = {"bamboo"}  # other normalisation and a 115k-class head: not the preset's function


def insert_block(text: str, preset: str, block: str) -> str:
    """``block`` as the preset entry's ``weights:`` (an old one removed), just before ``spec:``."""
    name = re.escape(preset)
    old = re.compile(rf"(\n  {name}:\n(?:    (?!weights:).*\n)*?)    weights:\n(?:      .*\n)+")
    text = old.sub(r"\1", text)
    entry = re.compile(rf"(\n  {name}:\n(?:    .*\n|      .*\n)*?)(    spec:\n)")
    text, count = entry.subn(lambda m: m.group(1) + block + m.group(2), text, count=1)
    assert count == 1, preset
    return text


def main(results_csv: str) -> None:
    from timm.models import get_pretrained_cfg
    from timm.models._registry import _model_with_tags

    top1 = {}
    with open(results_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            top1[row["model"]] = float(row["top1"])
    path = Path(__file__).resolve().parents[1] / "registry.yaml"
    text = path.read_text(encoding="utf-8")
    for preset, arch in PRESETS.items():
        lines = []
        for i, full in enumerate(_model_with_tags[arch]):
            tag = full.split(".", 1)[1]
            if tag in SKIP:
                continue
            cfg = get_pretrained_cfg(full).to_dict()
            fields = [f"hub: {cfg['hf_hub_id']}"]
            if i == 0:
                fields.append("default: true")
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
            if cfg["num_classes"] != 1000:
                fields.append(f"num_classes: {cfg['num_classes']}")
            lines.append(f"      {tag.replace('_', '-')}: {{{', '.join(fields)}}}")
        text = insert_block(text, preset, "    weights:\n" + "\n".join(lines) + "\n")
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
