"""Turn scikit-learn's bundled 8x8 handwritten digits into an ImageFolder dataset.

    pip install -e '.[examples]'          # scikit-learn, for the bundled data only
    python examples/make_digits_dataset.py data/digits
    vitzoo train examples/digits.yaml --data data/digits --out runs/digits

Writes ``OUT/train/<digit>/<n>.png`` and ``OUT/val/<digit>/<n>.png`` (a stratified, seeded
split; 1,797 images in all). Pixels (0..16) are scaled to 0..255 greyscale PNGs; training
upsamples them to the model's input size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(out: Path, val_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    for label in range(10):
        indices = np.flatnonzero(digits.target == label)
        rng.shuffle(indices)
        n_val = round(len(indices) * val_fraction)
        for split, chosen in (("val", indices[:n_val]), ("train", indices[n_val:])):
            folder = out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                pixels = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
                counts[split] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="dataset folder to create")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = write_digits(args.out, args.val_fraction, args.seed)
    print(f"{args.out}: {counts['train']} training and {counts['val']} validation images")


if __name__ == "__main__":
    main()
