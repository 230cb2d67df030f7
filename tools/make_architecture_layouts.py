"""Write the full-size state-dict layouts of reference models that have no released weights.

``make_reference_layouts.py`` covers every *released* checkpoint a preset claims (its names come
from the catalogue's ``released``). Some presets follow a reference implementation that ships no
weights -- vit-pytorch's NaViT -- and are still held to its exact layout: every tensor of the
reference model at the preset's full size must map strictly onto the preset through the
converter. This writes those layouts (key -> shape), built on the meta device, to
``tests/data/reference/architecture-layouts.json.gz``: preset name -> layout. Usage, in the
reference environment::

    /work/refenv/bin/python tools/make_architecture_layouts.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

OUT = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "data"
    / "reference"
    / "architecture-layouts.json.gz"
)

#: vitzoo preset -> vit_pytorch.na_vit.NaViT keyword arguments of the same model.
NAVIT = {
    "navit-b32": dict(patch_size=32, dim=768, depth=12, heads=12, dim_head=64, mlp_dim=3072),
    "navit-b16": dict(patch_size=16, dim=768, depth=12, heads=12, dim_head=64, mlp_dim=3072),
    "navit-l16": dict(patch_size=16, dim=1024, depth=24, heads=16, dim_head=64, mlp_dim=4096),
}


def main() -> None:
    from vit_pytorch.na_vit import NaViT

    layouts: dict[str, dict[str, list[int]]] = {}
    for preset, kwargs in NAVIT.items():
        with torch.device("meta"):
            model = NaViT(image_size=512, num_classes=1000, **kwargs)
        layouts[preset] = {k: list(v.shape) for k, v in model.state_dict().items()}
    OUT.write_bytes(gzip.compress(json.dumps(layouts, sort_keys=True).encode(), mtime=0))
    print(f"{OUT}: {OUT.stat().st_size / 1024:.0f} KiB, {len(layouts)} models")


if __name__ == "__main__":
    main()
