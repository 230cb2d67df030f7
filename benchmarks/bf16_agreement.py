"""Top-1 agreement of bf16 inference with float32 on held-out data (the accuracy side of bf16).

Scores a trained checkpoint on a labelled folder three ways -- float32, bf16 with the weights cast
once (``vitzoo.precision.for_inference``, what ``--precision bf16`` runs) and bf16 autocast --
and reports how often each bf16 path picks the same class as float32, plus each one's accuracy
and the largest logit difference. For example, with the digits example:

    python examples/make_digits_dataset.py data/digits
    vitzoo train examples/digits.yaml --data data/digits --out runs/digits
    python benchmarks/bf16_agreement.py runs/digits/best.safetensors --data data/digits/val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vitzoo.data.folders import FolderDataset, SampleIndex
from vitzoo.data.transforms import create_transform
from vitzoo.precision import for_inference
from vitzoo.training.inference import load_classifier
from vitzoo.training.objective import classification_logits


def logits_of(model: torch.nn.Module, images: torch.Tensor, autocast: bool = False) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return classification_logits(model(images)).float()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=Path, required=True, help="a folder of <class>/ images")
    p.add_argument("--json", type=Path, help="write the figures to this file")
    args = p.parse_args(argv)
    model, classes, data_cfg = load_classifier(args.checkpoint)
    folder = SampleIndex.scan(args.data, classes, strict=True)
    dataset = FolderDataset(folder, create_transform(data_cfg), seed=0, strict=True)
    pairs = [dataset[i, 0] for i in range(len(dataset))]  # (index, epoch): eval transform
    images = torch.stack([x for x, _ in pairs])
    targets = torch.tensor([int(y) for _, y in pairs])
    fp32 = logits_of(model, images)
    autocast = logits_of(model, images, autocast=True)
    cast = logits_of(for_inference(model, "bf16"), images)
    report = {"checkpoint": str(args.checkpoint), "samples": len(targets)}
    for name, logits in (("fp32", fp32), ("bf16_cast", cast), ("bf16_autocast", autocast)):
        report[name] = {
            "accuracy": float((logits.argmax(-1) == targets).float().mean()),
            "top1_agreement_with_fp32": float(
                (logits.argmax(-1) == fp32.argmax(-1)).float().mean()
            ),
            "max_abs_logit_diff": float((logits - fp32).abs().max()),
        }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
